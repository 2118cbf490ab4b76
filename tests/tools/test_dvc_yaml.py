"""dvc.yaml is generated (tools/dvc_yaml.py): the committed file is the generator's output, and
each preset pipeline is the default's stages over its preset."""

from pathlib import Path

import yaml

from tools import dvc_yaml

REPO = Path(__file__).resolve().parents[2]


def test_committed_dvc_yaml_is_the_generators_output():
    assert (REPO / "dvc.yaml").read_text() == dvc_yaml.render(), (
        "dvc.yaml differs from what tools/dvc_yaml.py writes (params.yaml, a preset or the template changed): "
        "run `python -m tools.dvc_yaml --write` and commit dvc.yaml")


def test_each_preset_pipeline_runs_the_default_stages_with_its_preset():
    stages = yaml.safe_load(dvc_yaml.render())["stages"]
    pipelines = dvc_yaml.pipelines()
    assert pipelines == ["text"]  # one per modality: gpu, imagenet and photos are image presets
    default = [s for s in stages if not any(s.startswith(f"{p}-") for p in pipelines)]
    assert default == list(dvc_yaml.STAGES)
    for name in pipelines:
        assert [s for s in stages if s.startswith(f"{name}-")] == [f"{name}-{s}" for s in default]
        for stage in default:
            ours, theirs = stages[stage], stages[f"{name}-{stage}"]
            assert f"--preset {name} " in theirs["cmd"] and "--preset" not in ours["cmd"]
            # the same command over the preset's folders (text/..., reports/text/...)
            assert theirs["cmd"].replace(f" --preset {name}", "").replace(f"{name}/", "") == ours["cmd"], stage
            assert set(ours) == set(theirs), stage


def test_random_inits_track_every_own_encoder_of_their_modality():
    """A `random_init_<method>` baseline builds `<method>.encoder`: each one in params.yaml of the
    pipeline's modality is tracked, mae's ViT by the image baselines, clm's causal Transformer
    by the text ones."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    stages = yaml.safe_load(dvc_yaml.render())["stages"]
    own = [f"{m}.encoder" for m, section in params.items() if isinstance(section, dict) and "encoder" in section]
    image, text = set(stages["baseline"]["params"]) & set(own), set(stages["text-baseline"]["params"]) & set(own)
    assert "mae.encoder" in image and "clm.encoder" not in image
    assert text == {"clm.encoder"}
    assert image | text == set(own)
