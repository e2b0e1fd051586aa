"""The RAM disk for models: copied and verified, mounted, mapped from, cleared without failing a request,
refused when its size cannot work, and skipped with one warning when there is no right to mount."""

from __future__ import annotations

import mmap
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.settings import Settings, load_settings
from supervision.mappings import mapped_files
from supervision.ramdisk import tmpfs
from supervision.ramdisk.model_copy import copy_verified
from supervision.ramdisk.operations import RamDiskRefused, RamDiskUnavailable, clear, plan, set_up
from supervision.ramdisk.tmpfs import Rights, Tmpfs, size_bytes
from tests.conftest import MINILM
from tests.harness import PROJECT_ROOT, Service

NOBODY = 65534


def _can_mount() -> bool:
    """Root with CAP_SYS_ADMIN (CI runs as root); a container without it cannot mount a tmpfs at all."""
    if os.geteuid() != 0:
        return False
    with tempfile.TemporaryDirectory() as probe:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", probe], capture_output=True).returncode:
            return False
        subprocess.run(["umount", probe], check=True)
    return True


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")
needs_mount = pytest.mark.skipif(not _can_mount(), reason="mounting a tmpfs needs root with CAP_SYS_ADMIN")


def _settings(ramdisk: Path, size_in_gb: float = 0.05) -> Settings:
    return load_settings(overrides={"USE_RAMDISK": "true", "RAMDISK_PATH": str(ramdisk),
                                    "RAMDISK_SIZE_IN_GB": str(size_in_gb)})


def _fake_model(directory: Path, size: int = 1 << 20) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "fake.gguf"
    path.write_bytes(os.urandom(size))
    return path


def _mounted(path: Path) -> bool:
    return tmpfs.mount_at(path) is not None


def _unmount_if_mounted(path: Path) -> None:
    """Never leave a tmpfs behind a failed test: lazily, if something still holds it."""
    if _mounted(path):
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


# ---- copying ---------------------------------------------------------------------------------------------------
def test_a_copy_has_the_same_bytes_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    source = _fake_model(tmp_path / "disk")
    (tmp_path / "ram").mkdir()
    result = copy_verified(source, tmp_path / "ram")
    assert result.copied and result.target.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in (tmp_path / "ram").iterdir() if not p.name.startswith(".sha256-")) == ["fake.gguf"]


def test_an_unchanged_copy_is_kept_not_rewritten(tmp_path: Path) -> None:
    source = _fake_model(tmp_path / "disk")
    (tmp_path / "ram").mkdir()
    first = copy_verified(source, tmp_path / "ram")
    inode = first.target.stat().st_ino
    second = copy_verified(source, tmp_path / "ram")
    assert not second.copied and second.target.stat().st_ino == inode and second.sha256 == first.sha256


def test_a_damaged_copy_of_the_same_size_is_replaced(tmp_path: Path) -> None:
    source = _fake_model(tmp_path / "disk")
    (tmp_path / "ram").mkdir()
    target = copy_verified(source, tmp_path / "ram").target
    damaged = bytearray(target.read_bytes())
    damaged[1000] ^= 0xFF
    target.write_bytes(bytes(damaged))
    assert copy_verified(source, tmp_path / "ram").copied
    assert target.read_bytes() == source.read_bytes()


def test_a_changed_source_is_copied_again(tmp_path: Path) -> None:
    source = _fake_model(tmp_path / "disk")
    (tmp_path / "ram").mkdir()
    copy_verified(source, tmp_path / "ram")
    source.write_bytes(os.urandom(source.stat().st_size))  # same size, new bytes
    assert copy_verified(source, tmp_path / "ram").copied
    assert (tmp_path / "ram" / source.name).read_bytes() == source.read_bytes()


# ---- mounting, rights, sizes -----------------------------------------------------------------------------------
def test_the_size_is_written_in_whole_mebibytes_into_the_mount_command() -> None:
    wanted = Tmpfs(Path("/mnt/ramdisk"), size_bytes(0.25), 1000, 1000)
    assert wanted.mount_command()[1:] == ["-t", "tmpfs", "-o", "size=256m,mode=0755,uid=1000,gid=1000", "tmpfs",
                                          "/mnt/ramdisk"]


def test_sudo_is_asked_about_exactly_the_commands_of_the_sudoers_lines(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    wanted = Tmpfs(tmp_path / "ram", size_bytes(0.5), 1000, 1000)
    allowed = tmp_path / "allowed"
    allowed.write_text("\n".join(line.split("NOPASSWD: ", 1)[1] for line in wanted.sudoers_lines("svc")) + "\n")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    # A stand-in for sudo that allows exactly the commands listed, as `sudo -n -l CMD` does.
    (fake_bin / "sudo").write_text(f'#!/bin/sh\n[ "$1" = -n ] && [ "$2" = -l ] || exit 1\nshift 2\n'
                                   f'grep -qxF -- "$*" {allowed}\n')
    (fake_bin / "sudo").chmod(0o755)
    monkeypatch.setattr(tmpfs, "_SYSTEM_PATH", f"{fake_bin}:/usr/sbin:/usr/bin:/sbin:/bin")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert tmpfs.mount_rights(wanted) == Rights("sudo")
    bigger = Tmpfs(wanted.path, size_bytes(1), 1000, 1000)  # another size is another command
    assert not tmpfs.mount_rights(bigger)


@needs_root
def test_a_size_too_small_for_the_models_is_refused_with_a_size_that_fits(tmp_path: Path) -> None:
    model = _fake_model(tmp_path / "disk", size=3 << 20)
    with pytest.raises(RamDiskRefused, match=r"cannot hold the served models .* set RAMDISK_SIZE_IN_GB=0\.1"):
        plan(_settings(tmp_path / "ram", size_in_gb=0.001), {"fake": str(model)}, {"fake": 1})


@needs_root
def test_a_size_that_would_starve_the_workers_is_refused_with_a_size_that_fits(tmp_path: Path) -> None:
    model = _fake_model(tmp_path / "disk")
    with pytest.raises(RamDiskRefused, match=r"the workers need about .* set RAMDISK_SIZE_IN_GB=0\.1"):
        plan(_settings(tmp_path / "ram", size_in_gb=1_000_000), {"fake": str(model)}, {"fake": 1})


@needs_root
def test_a_directory_with_files_in_it_is_not_mounted_over(tmp_path: Path) -> None:
    model = _fake_model(tmp_path / "disk")
    (tmp_path / "ram").mkdir()
    (tmp_path / "ram" / "precious.txt").write_text("keep me")
    with pytest.raises(RamDiskUnavailable, match="would hide them"):
        plan(_settings(tmp_path / "ram"), {"fake": str(model)}, {"fake": 1})


@needs_mount
def test_set_up_mounts_copies_and_clear_unmounts(tmp_path: Path) -> None:
    model = _fake_model(tmp_path / "disk")
    ram = tmp_path / "ram"
    try:
        paths = set_up(_settings(ram), {"fake": str(model)}, {"fake": 1})
        assert paths == {"fake": str(ram / "fake.gguf")}
        mount = tmpfs.mount_at(ram)
        assert mount is not None and mount.is_tmpfs and f"size={size_bytes(0.05) // 1024}k" in mount.options
        assert (ram / "fake.gguf").read_bytes() == model.read_bytes()
        assert clear(_settings(ram)) == f"unmounted the RAM disk at {ram}"
        assert not _mounted(ram)
    finally:
        _unmount_if_mounted(ram)


@needs_mount
def test_clear_leaves_a_tmpfs_it_did_not_mount_and_removes_only_its_copies(tmp_path: Path) -> None:
    model = _fake_model(tmp_path / "disk")
    ram = tmp_path / "ram"
    ram.mkdir()
    theirs = Tmpfs(ram, size_bytes(0.05), 0, 0)
    tmpfs.mount(theirs, Rights("root"))
    try:
        (ram / "someone-elses.txt").write_text("not ours")
        set_up(_settings(ram), {"fake": str(model)}, {"fake": 1})
        assert "removed the model copies" in clear(_settings(ram))
        assert _mounted(ram)
        assert sorted(p.name for p in ram.iterdir()) == ["someone-elses.txt"]
    finally:
        _unmount_if_mounted(ram)


def test_mapped_files_are_read_from_the_kernel(tmp_path: Path) -> None:
    model = _fake_model(tmp_path)
    with model.open("rb") as handle, mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ):
        assert mapped_files(os.getpid()) == [str(model)]
    assert mapped_files(os.getpid()) == []


# ---- the real service ------------------------------------------------------------------------------------------
@pytest.fixture
def ramdisk_service(tmp_path: Path, models_dir: Path) -> Iterator[Service]:
    """The default model alone, served from a real tmpfs that `start` mounts in a temporary directory."""
    ram = tmp_path / "ramdisk"
    service = Service(tmp_path / "service", models_dir, {
        "MODELS_TO_SERVE": MINILM, "USE_RAMDISK": "true", "RAMDISK_PATH": str(ram), "RAMDISK_SIZE_IN_GB": "0.25"})
    try:
        yield service.start()
    finally:
        service.stop()
        _unmount_if_mounted(ram)
        assert service.leftover_processes() == []


def _ramdisk(service: Service) -> Path:
    return Path(service.env_overrides["RAMDISK_PATH"])


def _disk_model(service: Service) -> Path:
    return service.models_dir / "all-minilm-l6-v2.f16.gguf"


@pytest.mark.slow
@needs_mount
def test_start_mounts_a_tmpfs_and_the_worker_maps_its_model_from_it(ramdisk_service: Service) -> None:
    ram = _ramdisk(ramdisk_service)
    mount = tmpfs.mount_at(ram)
    assert mount is not None and mount.fstype == "tmpfs" and "size=262144k" in mount.options
    [worker] = ramdisk_service.workers()
    assert f"{ram}/all-minilm-l6-v2.f16.gguf" in _maps(worker["pid"])
    assert str(_disk_model(ramdisk_service)) not in _maps(worker["pid"])
    assert worker["mapped_from"] == f"{ram}/all-minilm-l6-v2.f16.gguf"
    assert ramdisk_service.embed("served from memory")["dimensions"] == 384


@pytest.mark.slow
@needs_mount
def test_clear_unmounts_while_every_request_during_it_succeeds(ramdisk_service: Service) -> None:
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with ramdisk_service.client() as client:
            i = 0
            while not stop.is_set():
                i += 1
                statuses.append(client.post("/get_embedding_vector/",
                                            json={"text": f"clearing {threading.get_ident()} {i}"}).status_code)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        ramdisk_service.wait_for(lambda: len(statuses) >= 8, message="the load to get going")
        before = len(statuses)
        result = ramdisk_service.cli("ramdisk", "clear")
        during = len(statuses) - before
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert f"unmounted the RAM disk at {_ramdisk(ramdisk_service)}" in result.stdout
    assert not _mounted(_ramdisk(ramdisk_service))
    assert during > 0, "no request was answered while the workers moved"
    assert set(statuses) == {200}, Counter(statuses)
    ramdisk_service.remember_pids()
    [worker] = ramdisk_service.workers()
    assert str(_disk_model(ramdisk_service)) in _maps(worker["pid"])
    assert ramdisk_service.embed("served from disk now")["dimensions"] == 384


@pytest.mark.slow
@needs_mount
def test_post_clear_ramdisk_unmounts_it_and_says_so(ramdisk_service: Service) -> None:
    response = httpx.post(f"{ramdisk_service.base_url}/clear_ramdisk/", timeout=120)
    assert response.status_code == 200, response.text
    assert response.json() == {"message": "RAM Disk cleared successfully.",
                               "detail": f"unmounted the RAM disk at {_ramdisk(ramdisk_service)}"}
    assert not _mounted(_ramdisk(ramdisk_service))
    ramdisk_service.remember_pids()


@pytest.mark.slow
@needs_mount
def test_setup_moves_running_workers_back_onto_the_ramdisk(ramdisk_service: Service) -> None:
    ramdisk_service.cli("ramdisk", "clear")
    ramdisk_service.remember_pids()
    ramdisk_service.cli("ramdisk", "setup")
    ramdisk_service.remember_pids()
    [worker] = ramdisk_service.workers()
    assert f"{_ramdisk(ramdisk_service)}/all-minilm-l6-v2.f16.gguf" in _maps(worker["pid"])
    assert ramdisk_service.embed("back in memory")["dimensions"] == 384


@pytest.mark.slow
def test_clear_ramdisk_answers_that_it_is_disabled_when_it_is(minilm_service: Service) -> None:
    response = httpx.post(f"{minilm_service.base_url}/clear_ramdisk/", timeout=30)
    assert response.status_code == 200
    assert response.json()["message"] == "RAM Disk usage is disabled."


def test_the_openapi_document_describes_clear_ramdisk() -> None:
    from gateway.app import all_endpoints
    from gateway.openapi import build_document

    document = build_document(all_endpoints(), "test", "0")
    operation = document["paths"]["/clear_ramdisk/"]["post"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "ClearRamdiskResponse")


@needs_root
def test_start_refuses_a_size_that_would_starve_the_workers_and_mounts_nothing(tmp_path: Path,
                                                                                models_dir: Path) -> None:
    ram = tmp_path / "ramdisk"
    service = Service(tmp_path / "service", models_dir, {
        "MODELS_TO_SERVE": MINILM, "USE_RAMDISK": "true", "RAMDISK_PATH": str(ram), "RAMDISK_SIZE_IN_GB": "1000000"})
    result = service.cli("start", check=False)
    assert result.returncode != 0
    assert "RAM disk refused" in result.stderr and "set RAMDISK_SIZE_IN_GB=0.1" in result.stderr
    assert not _mounted(ram)


# ---- without rights --------------------------------------------------------------------------------------------
class UnprivilegedService(Service):
    """The service run by user `nobody` (uid 65534), who may not mount and has no sudo.

    The interpreter may live where `nobody` cannot read (a pyenv under a 0700 /root, as on the development
    machine), so the process keeps one capability: CAP_DAC_READ_SEARCH, reading files regardless of their
    permissions. It grants no right to mount (that is CAP_SYS_ADMIN), and no_new_privs keeps setuid programs
    such as mount or sudo from granting any.
    """

    def cli(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                   "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search", "--no-new-privs",
                   sys.executable, str(PROJECT_ROOT / "supervisor.py"), *args]
        result = subprocess.run(command, env=self.env, cwd=PROJECT_ROOT, capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"supervisor.py {' '.join(args)} as nobody failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result


@pytest.mark.slow
@needs_root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is needed to drop to nobody")
def test_without_rights_the_service_warns_once_and_serves_from_disk(tmp_path: Path, models_dir: Path) -> None:
    data_dir = tmp_path / "service"
    data_dir.mkdir()
    os.chown(data_dir, NOBODY, NOBODY)
    ram = tmp_path / "ramdisk"
    service = UnprivilegedService(data_dir, models_dir, {
        "MODELS_TO_SERVE": MINILM, "USE_RAMDISK": "true", "RAMDISK_PATH": str(ram), "RAMDISK_SIZE_IN_GB": "0.25",
        "CANARY_DIR": str(data_dir / "canary")})  # nobody may not write the run's shared verdicts
    try:
        started = service.cli("start")
        service.remember_pids()
        assert service.status()["pid"] and all(
            Path(f"/proc/{row['pid']}").stat().st_uid == NOBODY for row in service.status()["processes"])
        assert service.embed("served from disk")["dimensions"] == 384
        [worker] = service.workers()
        assert str(models_dir / "all-minilm-l6-v2.f16.gguf") in _maps(worker["pid"])
        assert not _mounted(ram)
        log = (data_dir / "logs" / "supervisor.log").read_text()
        warnings = [line for line in log.splitlines() if " WARNING " in line]
        assert len(warnings) == 1 and "RAM disk not used, models are served from disk: no right to mount" in warnings[0]
        assert "RAM disk not used" in started.stderr
    finally:
        service.stop()
        _unmount_if_mounted(ram)
    assert service.leftover_processes() == []
