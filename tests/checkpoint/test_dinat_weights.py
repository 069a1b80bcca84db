"""Official and Hugging Face DiNAT state dicts load into our backbone; RPB resizing; the
converter tool's output loads into D2DiNAT; weights-only loading."""

import argparse
import re

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_backbone

import dinat_m2f.modeling  # noqa: F401
from dinat_m2f.checkpoint import (
    UnsafeCheckpointError,
    convert_to_official,
    load_state_dict_file,
    official_backbone_state_dict,
    resize_rpb,
)
from dinat_m2f.config import add_dinat_config
from dinat_m2f.modeling.backbone import dinat
from tests.conftest import DINAT_MINI_OPTS
from tools import convert_pretrained


def official_checkpoint(constructor=dinat.dinat_mini, seed=0):
    """An ImageNet checkpoint in the official naming: our classifier's weights without the
    segmentation output norms."""
    torch.manual_seed(seed)
    state = constructor(num_classes=1000, out_indices=()).state_dict()
    assert (
        "head.weight" in state
        and "norm.weight" in state
        and not any(re.match(r"norm\d", k) for k in state)
    )
    return state


def to_hugging_face(official):
    """Renames official weights the way transformers' DinatForImageClassification names them
    (written independently of the converter)."""
    hf = {}
    for name, tensor in official.items():
        m = re.match(r"levels\.(\d+)\.blocks\.(\d+)\.(.*)", name)
        if m:
            prefix = f"dinat.encoder.levels.{m[1]}.layers.{m[2]}."
            rest = m[3]
            if rest.startswith("attn.qkv."):
                kind = rest.rsplit(".", 1)[1]
                for part, chunk in zip(("query", "key", "value"), tensor.chunk(3)):
                    hf[f"{prefix}attention.self.{part}.{kind}"] = chunk.clone()
                continue
            rest = {"attn.rpb": "attention.self.rpb"}.get(rest, rest)
            for old, new in [
                ("norm1.", "layernorm_before."),
                ("norm2.", "layernorm_after."),
                ("attn.proj.", "attention.output.dense."),
                ("mlp.fc1.", "intermediate.dense."),
                ("mlp.fc2.", "output.dense."),
            ]:
                if rest.startswith(old):
                    rest = new + rest[len(old) :]
            hf[prefix + rest] = tensor
            continue
        name = re.sub(r"^levels\.(\d+)\.downsample\.", r"encoder.levels.\1.downsample.", name)
        name = name.replace("patch_embed.proj.", "embeddings.patch_embeddings.projection.")
        name = name.replace("patch_embed.norm.", "embeddings.norm.")
        name = re.sub(r"^norm\.", "layernorm.", name)
        if name.startswith("head."):
            hf[name.replace("head.", "classifier.")] = tensor
            continue
        hf["dinat." + name] = tensor
    return hf


def mini_backbone(*opts):
    cfg = get_cfg()
    add_dinat_config(cfg)
    cfg.MODEL.BACKBONE.NAME = "D2DiNAT"
    cfg.merge_from_list(DINAT_MINI_OPTS + list(opts))
    return build_backbone(cfg)


def test_official_checkpoint_loads_with_only_head_and_output_norms_missing():
    official = official_checkpoint()
    backbone = mini_backbone()
    report = []
    weights = official_backbone_state_dict(official, backbone.state_dict(), report)
    result = backbone.load_state_dict(weights, strict=False)
    assert sorted(result.missing_keys) == sorted(
        f"norm{i}.{p}" for i in range(4) for p in ("weight", "bias")
    )
    assert result.unexpected_keys == []
    assert {line.split()[1] for line in report} == {
        "head.weight",
        "head.bias",
        "norm.weight",
        "norm.bias",
    }
    for name, tensor in weights.items():
        assert torch.equal(backbone.state_dict()[name], tensor)


def test_hugging_face_names_convert_to_official():
    official = official_checkpoint(dinat.dinat_base)  # base: layer scale too
    hf = to_hugging_face(official)
    for name in list(hf):  # layer scale: transformers stores both gammas in one (2, dim) tensor
        if name.endswith(".gamma1"):
            base = name[: -len(".gamma1")]
            hf[base + ".layer_scale_parameters"] = torch.stack(
                [hf.pop(name), hf.pop(base + ".gamma2")]
            )
    assert any(".attention.self.query.weight" in k for k in hf)
    converted = convert_to_official(hf)
    assert converted.keys() == official.keys()
    for name in official:
        assert torch.equal(converted[name], official[name]), name


def test_hugging_face_backbone_output_norms_map_to_level_norms():
    torch.manual_seed(1)
    backbone = mini_backbone()
    hf = {
        f"hidden_states_norms.stage{i + 1}.weight": backbone.state_dict()[f"norm{i}.weight"]
        for i in range(4)
    }
    hf["embeddings.norm.weight"] = backbone.state_dict()["patch_embed.norm.weight"]
    converted = convert_to_official(hf)
    assert set(converted) == {
        "norm0.weight",
        "norm1.weight",
        "norm2.weight",
        "norm3.weight",
        "patch_embed.norm.weight",
    }


def test_rpb_resize_is_bicubic_and_keeps_smooth_biases():
    heads, small, large = 3, 7, 11
    grid = torch.linspace(-1, 1, 2 * small - 1)
    rpb = (grid[:, None] + 2 * grid[None, :]).expand(heads, -1, -1).clone()
    resized = resize_rpb(rpb, large)
    assert resized.shape == (heads, 21, 21)
    fine = torch.linspace(-1, 1, 2 * large - 1)
    expected = (fine[:, None] + 2 * fine[None, :]).expand(heads, -1, -1)
    # a linear ramp stays a ramp away from the border (bicubic, align_corners=False)
    assert (resized[:, 3:-3, 3:-3] - expected[:, 3:-3, 3:-3]).abs().max() < 0.1
    assert resize_rpb(rpb, small) is rpb


def test_converter_resizes_rpb_and_output_loads_in_detectron2(tmp_path):
    official = official_checkpoint()
    source = tmp_path / "dinat_mini_in1k.pth"
    torch.save(official, source)
    target = tmp_path / "converted" / "dinat_mini_k11.pth"
    report = convert_pretrained.main(
        [str(source), str(target), "--variant", "dinat_mini", "--kernel-size", "11"]
    )
    resized = [line for line in report if line.startswith("resized")]
    assert len(resized) == 18  # one RPB per block
    assert "resized levels.0.blocks.0.attn.rpb (2, 13, 13) -> (2, 21, 21) (bicubic)" in resized
    assert any(line.startswith("dropped head.weight") for line in report)
    assert sum(line.startswith("not in the checkpoint") for line in report) == 8  # norm0..3

    backbone = mini_backbone(
        "MODEL.DINAT.KERNEL_SIZE",
        "11",
        "MODEL.DINAT.DILATIONS",
        "[[1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]",
    )
    model = torch.nn.Module()
    model.backbone = backbone
    DetectionCheckpointer(model).load(str(target))
    assert torch.equal(
        backbone.levels[1].blocks[2].mlp.fc1.weight, official["levels.1.blocks.2.mlp.fc1.weight"]
    )
    assert backbone.levels[0].blocks[0].attn.rpb.shape == (2, 21, 21)


def test_loading_refuses_pickled_objects_and_bad_files(tmp_path):
    evil = tmp_path / "evil.pth"  # an arbitrary (here harmless) object beside the weights
    torch.save({"model": {"w": torch.zeros(1)}, "obj": argparse.Namespace(run="code")}, evil)
    with pytest.raises(
        UnsafeCheckpointError, match=r"evil.pth: refused to load 'argparse.Namespace'"
    ):
        load_state_dict_file(str(evil))
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found: .*missing.pth"):
        load_state_dict_file(str(tmp_path / "missing.pth"))
    nested = tmp_path / "nested.pth"
    torch.save({"state_dict": {"a": torch.ones(2)}}, nested)
    assert list(load_state_dict_file(str(nested))) == ["a"]


def test_converter_takes_the_official_converters_pkl(tmp_path):
    """The DiNAT release's convert-pretrained-dinat-model-to-d2.py pickles {"model": <ImageNet
    state dict>, "__author__": "third_party", "matching_heuristics": True} with `pickle`."""
    import pickle

    official = official_checkpoint()
    source = tmp_path / "dinat_mini_in1k_224.pkl"
    source.write_bytes(
        pickle.dumps({"model": official, "__author__": "third_party", "matching_heuristics": True})
    )
    target = tmp_path / "dinat_mini_d2.pth"
    report = convert_pretrained.main([str(source), str(target), "--variant", "dinat_mini"])
    assert not any(line.startswith("resized") for line in report)
    converted = torch.load(target, weights_only=True)["model"]
    assert set(converted) == {
        f"backbone.{k}" for k in official if not k.startswith(("head.", "norm."))
    }
    for name, tensor in converted.items():
        assert torch.equal(tensor, official[name[len("backbone.") :]]), name


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_converter_refuses_files_that_would_run_code(tmp_path, capsys, suffix):
    import pickle

    from tests.checkpoint.test_safe_load import CreatesMarker

    marker = tmp_path / "marker"
    source = tmp_path / f"evil{suffix}"
    content = {"model": {"patch_embed.norm.weight": CreatesMarker(marker)}}
    source.write_bytes(pickle.dumps(content)) if suffix == ".pkl" else torch.save(content, source)
    with pytest.raises(SystemExit) as info:
        convert_pretrained.main([str(source), str(tmp_path / "out.pth"), "--variant", "dinat_mini"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"{source}: refused to load" in err
    assert not marker.exists() and not (tmp_path / "out.pth").exists()


def test_converter_refuses_a_checkpoint_of_another_architecture(tmp_path, capsys):
    source = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.bias": torch.zeros(10)}, source)
    with pytest.raises(SystemExit):
        convert_pretrained.main([str(source), str(tmp_path / "out.pth"), "--variant", "dinat_mini"])
    err = capsys.readouterr().err
    assert "none of the checkpoint's 2 tensors is a weight of this backbone" in err
    assert "conv1.weight" in err and not (tmp_path / "out.pth").exists()


def test_shape_mismatch_names_the_key():
    official = official_checkpoint()
    narrower = mini_backbone("MODEL.DINAT.EMBED_DIM", "32")
    with pytest.raises(
        ValueError, match=r"patch_embed.proj.0.weight: checkpoint shape .* does not match"
    ):
        official_backbone_state_dict(official, narrower.state_dict())
