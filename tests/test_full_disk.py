"""A full disk (the store, a twin's ``state.pt``, ``report --out``) is one line naming the path and the free
space, never a traceback, and never a truncated figure or report: every file goes through the one atomic write
(:mod:`trajectory.atomic`).

A real 3 MB tmpfs is used where this process may mount one (root); elsewhere those tests skip, and the same
paths are driven by a simulated full disk (``os.replace`` refusing with ENOSPC under one folder), which always runs.
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
from builders import local_manifest, stdlib_text, twin_manifest
from hubserver import build_checkpoints

from trajectory import atomic
from trajectory.cli import main
from trajectory.errors import DiskFullError

pytestmark = pytest.mark.usefixtures("one_thread")
PNG_END = b"IEND\xaeB`\x82"


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, tokenizer):
    return build_checkpoints(tmp_path_factory.mktemp("disk") / "ck", [0, 4], tokenizer, same_as_step0=())


def one_line(capsys, *argv) -> str:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (code, out, err)
    return err


def whole_or_absent(folder: Path) -> None:
    """No half-written file: every PNG ends as a PNG ends, and no temporary name is left behind."""
    for path in folder.rglob("*"):
        assert not path.name.startswith(".tmp-"), path
        if path.suffix == ".png":
            assert path.read_bytes().endswith(PNG_END), f"truncated figure {path}"


# -- a real full disk ----------------------------------------------------------------------------------------
@pytest.fixture
def tiny_disk(tmp_path):
    """A 3 MB tmpfs at ``tmp_path/disk``, unmounted afterwards; skipped where mounting is not permitted."""
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or 'not root'}); simulated below")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` until at most ``leave`` bytes (and at least ``leave`` − 4 KiB) are free."""

    def free() -> int:
        return os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize

    with open(disk / "filler", "ab") as fh:
        try:
            while free() > leave:
                fh.write(b"\0" * max(4096, min(1 << 20, free() - leave)))
                fh.flush()
        except OSError:
            pass


def test_a_sweep_into_a_full_store_is_one_line_naming_the_path_and_the_free_space(tiny_disk, ckpts, text_file, capsys):
    toml = local_manifest(tiny_disk / "m.toml", ckpts, text_file, [0, 4], tiny_disk / "store", tokens=1024)
    fill(tiny_disk, 0)
    err = one_line(capsys, "sweep", toml, "--no-progress")
    assert "no space left" in err and str(tiny_disk / "store") in err and "free" in err, err
    whole_or_absent(tiny_disk / "store")


def test_a_twin_state_that_does_not_fit_is_one_line(tiny_disk, tiny_dir, text_file, capsys):
    train = tiny_disk.parent / "train.txt"
    train.write_text(stdlib_text(600_000)[400_000:], encoding="utf-8")
    toml = twin_manifest(
        tiny_disk.parent / "tw.toml", tokenizer=tiny_dir, eval_file=text_file, train_file=train,
        store=tiny_disk / "store", schedule="steps = [0, 2]", twin="steps = 2\nbatch_tokens = 128\nseeds = [0]",
    )  # fmt: skip
    fill(tiny_disk, 256 << 10)  # units fit, the optimiser state (~0.9 MB) does not
    err = one_line(capsys, "sweep", toml, "--no-progress")
    assert "no space left" in err and "free" in err and str(tiny_disk) in err, err
    whole_or_absent(tiny_disk / "store")


def test_a_report_into_a_full_folder_is_one_line_and_leaves_no_truncated_figure(
    tiny_disk, ckpts, text_file, tmp_path, capsys
):
    toml = local_manifest(tmp_path / "m.toml", ckpts, text_file, [0, 4], tmp_path / "store", tokens=1024)
    assert main(["sweep", str(toml), "--no-progress"]) == 0
    capsys.readouterr()
    fill(tiny_disk, 96 << 10)  # a figure or two fit, not all of them
    err = one_line(capsys, "report", toml, "--out", tiny_disk / "fig")
    assert "no space left" in err and str(tiny_disk / "fig") in err and "free" in err, err
    whole_or_absent(tiny_disk / "fig")


# -- a simulated full disk: always runs ----------------------------------------------------------------------
@pytest.fixture
def disk_full_under(monkeypatch):
    """``full(folder)``: from now on every rename into ``folder`` fails with ENOSPC, as a full disk makes it."""
    real = os.replace

    def full(folder: Path) -> None:
        def replace(src, dst, *a, **k):
            if str(Path(dst).absolute()).startswith(str(Path(folder).absolute())):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
            return real(src, dst, *a, **k)

        monkeypatch.setattr(atomic.os, "replace", replace)

    return full


def test_a_simulated_full_store_stops_the_sweep_in_one_line_even_when_the_failure_record_fails_too(
    disk_full_under, ckpts, text_file, tmp_path, capsys
):
    toml = local_manifest(tmp_path / "m.toml", ckpts, text_file, [0, 4], tmp_path / "store", tokens=1024)
    disk_full_under(tmp_path / "store")  # the unit and its failure record alike
    err = one_line(capsys, "sweep", toml, "--no-progress")
    assert "no space left" in err and str(tmp_path / "store") in err and "free" in err, err
    assert not list((tmp_path / "store").rglob("*.parquet"))


def test_a_simulated_full_out_folder_is_one_line_from_report(disk_full_under, ckpts, text_file, tmp_path, capsys):
    toml = local_manifest(tmp_path / "m.toml", ckpts, text_file, [0, 4], tmp_path / "store", tokens=1024)
    assert main(["sweep", str(toml), "--no-progress"]) == 0
    capsys.readouterr()
    disk_full_under(tmp_path / "fig")
    err = one_line(capsys, "report", toml, "--out", tmp_path / "fig")
    assert "no space left" in err and str(tmp_path / "fig") in err, err
    whole_or_absent(tmp_path / "fig")
    assert not list((tmp_path / "fig").rglob("*.png")) and not (tmp_path / "fig" / "report.md").exists()


def test_a_writer_that_hides_the_errno_is_still_a_full_disk_when_nothing_is_free(monkeypatch, tmp_path):
    """torch.save on a full disk says only "unexpected pos 704 vs 598": no errno, no "No space left"."""

    def torch_like(tmp: Path) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(atomic, "free_bytes", lambda folder: 0)
    with pytest.raises(DiskFullError, match=r"no space left .*state\.pt.*0 B free"):
        atomic.atomic_write(tmp_path / "state.pt", torch_like)
    monkeypatch.setattr(atomic, "free_bytes", lambda folder: 10 << 30)
    with pytest.raises(RuntimeError, match="unexpected pos"):  # with room to spare it is not a full disk
        atomic.atomic_write(tmp_path / "state.pt", torch_like)
    assert not list(tmp_path.iterdir())
