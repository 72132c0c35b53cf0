"""What visitors read about models and datasets never holds a server path."""

from clipdemo.names import hide_path, model_name, source_name
from clipdemo.scratch.encoder import describe_card


def test_models_by_hub_id_or_folder_name(tmp_path):
    assert model_name("openai/clip-vit-base-patch32") == "openai/clip-vit-base-patch32"
    assert model_name(str(tmp_path / "my-clip")) == "local model 'my-clip'"
    assert model_name("./models/my-clip") == "local model 'my-clip'"
    message = f"Model folder '{tmp_path}/my-clip' could not be loaded ({tmp_path}/my-clip/config.json is broken)."
    assert hide_path(message, str(tmp_path / "my-clip"), "my-clip") == (
        "Model folder 'my-clip' could not be loaded (my-clip/config.json is broken)."
    )
    assert hide_path("Model 'a/b' failed", "a/b", "x") == "Model 'a/b' failed"


def test_sources_by_kind_and_folder_name():
    assert source_name("folder:/srv/data/pokemon") == "folder: pokemon"
    assert source_name("cars-devkit:/data/stanford_cars") == "cars-devkit: stanford_cars"
    assert source_name("hf:fcakyon/pokemon-classification:mini") == "hf:fcakyon/pokemon-classification:mini"
    assert source_name("builtin:shapes (seed 0)") == "builtin:shapes (seed 0)"


def test_a_scratch_card_names_its_folder_not_its_path():
    card = {
        "dataset": {"source": "folder:/srv/private/pokemon"},
        "classes": ["a", "b"],
        "preset": "default",
        "metrics": {"acc1": 0.5, "n": 10},
        "eval_split": "test",
    }
    text = describe_card(card)
    assert "trained on folder: pokemon, 2 classes; top-1 50.0% on test (10 images)" in text and "/srv" not in text
