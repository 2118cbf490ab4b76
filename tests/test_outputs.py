"""All-or-nothing stage outputs and one-line messages for disk and permission errors."""

from __future__ import annotations

import errno
import io

import pytest
import torch

from pipeline.errors import describe_os_error, exit_on_user_error
from pipeline.outputs import StagedOutputs, save_torch, write_bytes, write_json


def test_outputs_appear_together_on_success(tmp_path):
    with StagedOutputs() as out:
        write_json(out.file(tmp_path / "m" / "a.json"), {"x": 1})
        d = out.dir(tmp_path / "figs")
        (d / "f.png").write_bytes(b"png")
        assert not (tmp_path / "m" / "a.json").exists()  # nothing final before the stage ends
    assert (tmp_path / "m" / "a.json").read_text() == '{\n  "x": 1\n}\n'
    assert (tmp_path / "figs" / "f.png").read_bytes() == b"png"
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_failure_leaves_the_previous_outputs_and_no_temporaries(tmp_path):
    (tmp_path / "a.json").write_text("old")
    with pytest.raises(RuntimeError):
        with StagedOutputs() as out:
            write_json(out.file(tmp_path / "a.json"), {"x": 1})
            write_json(out.file(tmp_path / "b.json"), {"y": 2})
            raise RuntimeError("training failed")
    assert (tmp_path / "a.json").read_text() == "old" and not (tmp_path / "b.json").exists()
    assert not list(tmp_path.rglob("*.tmp"))


def test_an_output_path_that_is_a_folder_fails_before_any_work(tmp_path):
    (tmp_path / "metrics.json").mkdir()
    with pytest.raises(IsADirectoryError) as err:
        StagedOutputs().file(tmp_path / "metrics.json")
    assert describe_os_error(err.value).startswith(f"cannot write {tmp_path / 'metrics.json'}: output path is a folder")


def test_full_disk_is_one_line_naming_the_path(capsys):
    with pytest.raises(OSError) as err:
        write_bytes("/dev/full", b"x" * 10)  # /dev/full answers every write with ENOSPC
    assert err.value.errno == errno.ENOSPC

    @exit_on_user_error
    def stage():
        write_bytes("/dev/full", b"x")

    with pytest.raises(SystemExit) as code:
        stage()
    assert code.value.code == 2
    assert capsys.readouterr().err == "error: cannot write /dev/full: No space left on device; free disk space and re-run\n"


def test_permission_error_is_one_line(capsys, monkeypatch):
    @exit_on_user_error
    def stage():
        raise PermissionError(errno.EACCES, "Permission denied", "/ro/metrics.json")

    with pytest.raises(SystemExit):
        stage()
    assert capsys.readouterr().err.startswith("error: cannot write /ro/metrics.json: Permission denied; make it writable")


def test_other_os_errors_stay_tracebacks():
    @exit_on_user_error
    def stage():
        raise ConnectionResetError(errno.ECONNRESET, "reset")

    with pytest.raises(ConnectionResetError):
        stage()


def test_save_torch_bytes_depend_only_on_content(tmp_path):
    torch.manual_seed(0)
    a = torch.nn.Linear(3, 2)
    torch.manual_seed(0)
    b = torch.nn.Linear(3, 2)
    save_torch({"state_dict": a.state_dict(), "params": {"w": 1}}, tmp_path / "a.pt")
    save_torch({"state_dict": b.state_dict(), "params": {"w": 1}}, tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    back = torch.load(io.BytesIO((tmp_path / "a.pt").read_bytes()), weights_only=True)
    torch.testing.assert_close(back["state_dict"]["weight"], a.weight.detach())
