"""Hostile config and file inputs (issue 17, item 7): each costs one clear line and exit 1.

Every case runs the real CLI (``python -m collector validate|run``) on real files: a YAML of nested
anchors, ``/dev/zero``, a FIFO, a directory, a config far over the size limit, a certificate or
token file that is not a regular file.  Asserted: exit status 1, no traceback, a message naming
the file or line, and a bounded time (nothing reads forever or waits for a FIFO writer).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, collector_cmd, free_port
from tests.hostile.shipped import otlp_to_debug

QUICK = 20.0  # seconds: generous for a loaded 2-core machine; the fixed cases take ~1 s


def run_cli(*args: str, timeout: float = QUICK) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = subprocess.run(collector_cmd(*args), cwd=REPO, capture_output=True, text=True, timeout=timeout)
    return result, time.monotonic() - started


def assert_one_clear_line(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def billion_laughs(levels: int = 9) -> str:
    """The classic: each level a list of nine aliases of the one before (9**9 values, ~400 bytes)."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]")
    lines.append(f"receivers: *l{levels - 1}")
    return "\n".join(lines) + "\n"


def test_billion_laughs_fails_fast_naming_the_line(tmp_path):
    path = tmp_path / "laughs.yaml"
    path.write_text(billion_laughs())
    result, took = run_cli("validate", "--config", str(path))
    assert_one_clear_line(result, "laughs.yaml", "expands to more than", "line 6")
    assert took < QUICK


def test_config_that_is_not_a_regular_file_is_refused(tmp_path):
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)
    for path, kind in (("/dev/zero", "a character device"), (str(fifo), "a FIFO"), (str(tmp_path), "a directory")):
        result, _ = run_cli("validate", "--config", path)
        assert_one_clear_line(result, path, f"not a regular file ({kind})")
    result, _ = run_cli("run", "--config", "/dev/zero")
    assert_one_clear_line(result, "/dev/zero", "not a regular file")


def test_huge_config_is_refused_by_size_before_parsing(tmp_path):
    """64 MB of unknown keys: refused by its size, fast and without reading it into memory."""
    path = tmp_path / "huge.yaml"
    with open(path, "w") as f:
        f.write("receivers:\n")
        line = "".join(f"  unknown_key_{i}: v\n" for i in range(100_000))
        while f.tell() < 64 << 20:
            f.write(line)
    result, took = run_cli("validate", "--config", str(path))
    assert_one_clear_line(result, "huge.yaml", "file too large")
    assert took < QUICK


def test_many_errors_are_capped(tmp_path):
    """A file under the limit but full of unknown keys: a screenful of errors and a count."""
    path = tmp_path / "many.yaml"
    path.write_text("receivers:\n  otlp:\n    protocols:\n      grpc:\n"
                    + "".join(f"        bogus_{i}: 1\n" for i in range(500)))
    result, _ = run_cli("validate", "--config", str(path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) <= 102 and "more" in lines[-1], result.stderr[-300:]


SIDE_FILE_CONFIG = otlp_to_debug("""\
      http:
        endpoint: 127.0.0.1:{http_port}
        {block}
""")


@pytest.mark.parametrize("kind", ["cert_fifo", "cert_zero", "token_zero", "token_fifo", "cert_huge"])
def test_bad_cert_or_token_file_fails_start_in_one_line(tmp_path, kind):
    """A FIFO as cert_file used to hang start (SIGTERM ignored); /dev/zero was a MemoryError."""
    fifo = tmp_path / "file.fifo"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.pem"
    huge.write_bytes(b"A" * (2 << 20))
    key = tmp_path / "key.pem"
    key.write_text("not a key\n")
    target = {"cert_fifo": fifo, "cert_zero": "/dev/zero", "token_zero": "/dev/zero",
              "token_fifo": fifo, "cert_huge": huge}[kind]
    if kind.startswith("cert"):
        block = f"tls: {{cert_file: '{target}', key_file: '{key}'}}"
        setting = "tls cert_file"
    else:
        block = f"auth: {{bearer_token_file: '{target}'}}"
        setting = "auth bearer_token_file"
    config = tmp_path / "c.yaml"
    config.write_text(SIDE_FILE_CONFIG.format(http_port=free_port(), metrics_port=free_port(), block=block))
    result, took = run_cli("run", "--config", str(config))
    reason = "file too large" if kind == "cert_huge" else "not a regular file"
    assert_one_clear_line(result, setting, str(target), reason)
    assert took < QUICK


def test_sigterm_stops_a_start_that_waits(tmp_path):
    """Whatever start is doing, SIGTERM ends it: the collector is stopped within the deadline."""
    fifo = tmp_path / "file.fifo"
    os.mkfifo(fifo)
    config = tmp_path / "c.yaml"
    config.write_text(SIDE_FILE_CONFIG.format(http_port=free_port(), metrics_port=free_port(),
                                              block=f"auth: {{bearer_token_file: '{fifo}'}}"))
    proc = subprocess.Popen(collector_cmd("run", "--config", str(config)), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=QUICK)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the collector ignored SIGTERM")
    assert proc.returncode != 0 and "Traceback" not in err, err
