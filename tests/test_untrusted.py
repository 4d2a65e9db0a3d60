"""Untrusted checkpoints: a pickle that needs more than tensors is refused, and runs nothing."""

import os

import torch
from builders import tiny_model

from trajectory.cli import main


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_bin_is_refused_in_one_line_and_never_executed(tmp_path, capsys, text_file, tokenizer):
    model_dir, marker = tmp_path / "evil", tmp_path / "PWNED"
    model = tiny_model("gpt_neox")
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)  # without it the folder is refused earlier, for its empty tokenizer
    (model_dir / "model.safetensors").unlink()
    torch.save({**model.state_dict(), "payload": Payload(marker)}, model_dir / "pytorch_model.bin")
    capsys.readouterr()
    code = main(["measure", str(model_dir), "--text-file", str(text_file), "--tokens", "1024", "--seq-len", "64"])
    err = capsys.readouterr().err
    assert code == 2 and "refused to load" in err and "weights_only" in err
    assert len(err.strip().splitlines()) == 1
    assert not marker.exists()


def test_plain_tensor_bin_still_loads(tmp_path, capsys, text_file, tokenizer):
    model_dir = tmp_path / "bin"
    model = tiny_model("gpt_neox")
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    (model_dir / "model.safetensors").unlink()
    torch.save(model.state_dict(), model_dir / "pytorch_model.bin")
    code = main(["measure", str(model_dir), "--text-file", str(text_file), "--tokens", "1024", "--seq-len", "64"])
    assert code == 0, capsys.readouterr().err
