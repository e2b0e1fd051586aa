"""The operator console: a static page (HTML, script, style sheet) over the admin API; see gateway/routes/console.py."""
