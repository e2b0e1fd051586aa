"""What makes a start quick without making it wrong: the CLI learns at once that nothing listens, and a gateway
started beside the writer can tell whether the writer's tables are there yet; a start that cannot succeed says why at once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from shared.control_client import NotRunning, send_command
from shared.schema import create_schema, database_engine, schema_created
from tests.harness import Service


def test_a_command_to_a_control_socket_nobody_listens_on_fails_at_once(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(NotRunning):
        send_command(f"ipc://{tmp_path / 'control.sock'}", "status", timeout=5.0)
    assert time.monotonic() - started < 1.0  # not the 5 s timeout


def test_a_stale_control_socket_file_also_fails_at_once(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "control.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))  # bound, never listening, then closed: the file a killed supervisor leaves
    started = time.monotonic()
    with pytest.raises(NotRunning):
        send_command(f"ipc://{path}", "status", timeout=5.0)
    assert time.monotonic() - started < 1.0


def test_the_schema_is_missing_until_the_writer_creates_it_and_then_present(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    reader = database_engine(url, read_only=True)
    assert not schema_created(reader)  # no file yet
    writer = database_engine(url)
    with writer.connect():
        pass  # the file now exists, with no table in it
    assert not schema_created(reader)
    create_schema(writer)
    assert schema_created(reader)
    writer.dispose()
    reader.dispose()


def test_a_model_name_no_catalogue_lists_stops_the_start_with_a_message_naming_it(tmp_path: Path,
                                                                                  models_dir: Path) -> None:
    service = Service(tmp_path, models_dir, env_overrides={"MODELS_TO_SERVE": "all-minilm-l6-v3"})
    result = service.cli("start", check=False, timeout=60)
    assert result.returncode == 1
    assert "MODELS_TO_SERVE names 'all-minilm-l6-v3', which no catalogue lists" in result.stderr
    assert "Traceback" not in result.stderr
    assert not service.leftover_processes()
