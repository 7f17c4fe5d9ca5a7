"""The packaged download manifest validates against its schema, and broken manifests are refused clearly."""
import copy
import json

import jsonschema
import pytest

from asif_nb import download
from asif_nb.download import load_manifest

DEMO_PACKAGES = ("tuxpaint-stamps-default", "openclipart-svg", "dataset-fashion-mnist", "emoji-datasource-google")


def _document():
    return json.loads(download.MANIFEST_PATH.read_text(encoding="utf-8"))


def _write(tmp_path, document):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_schema_is_a_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(json.loads(download.SCHEMA_PATH.read_text(encoding="utf-8")))


def test_packaged_manifest_validates_and_keeps_file_order():
    manifest = load_manifest()
    assert list(manifest) == [entry["id"] for entry in _document()["artifacts"]]
    assert set(DEMO_PACKAGES) <= set(manifest)


@pytest.mark.parametrize("artifact_id", DEMO_PACKAGES)
def test_demo_packages_are_pinned_by_hash_and_reachable_without_their_client(artifact_id):
    entry = load_manifest()[artifact_id]
    assert entry["kind"] == "package" and entry.get("verify", "sha256") == "sha256"
    (file,) = entry["files"]
    assert len(file["sha256"]) == 64 and file["bytes"] > 1_000_000
    types = [source["type"] for source in entry["sources"]]
    # The package client comes first (CI, this machine); an https mirror serves Colab/macOS without it.
    assert types[0] in ("apt", "npm") and "https" in types[1:]
    assert entry["sources"][0]["version"] == entry["version"]


def test_only_trust_on_first_use_entries_lack_a_hash():
    for entry in load_manifest().values():
        if any(file["sha256"] is None for file in entry["files"]):
            assert entry["verify"] == "on-first-download", entry["id"]
            assert "first download" in entry["description"], entry["id"]


def test_missing_field_names_the_entry_and_the_field(tmp_path):
    document = _document()
    del document["artifacts"][1]["licence"]
    with pytest.raises(ValueError, match=r"artifact #1 \(id 'openclipart-svg'\).*'licence' is a required property"):
        load_manifest(_write(tmp_path, document))


def test_null_sha_without_on_first_download_is_refused(tmp_path):
    document = _document()
    document["artifacts"][0]["files"][0]["sha256"] = None
    with pytest.raises(ValueError, match="tuxpaint-stamps-default.*verify"):
        load_manifest(_write(tmp_path, document))


def test_embeddings_need_their_encoders_by_name(tmp_path):
    document = _document()
    entry = next(e for e in document["artifacts"] if e["kind"] == "embeddings")
    del entry["encoders"]
    with pytest.raises(ValueError, match="'encoders' is a required property"):
        load_manifest(_write(tmp_path, document))
    entry["encoders"] = {"image": ["vit-b16-in21k"]}
    with pytest.raises(ValueError, match="encoders.*'text' is a required property"):
        load_manifest(_write(tmp_path, document))
    entry["encoders"] = "the backbones of the authors' demo"
    with pytest.raises(ValueError, match="encoders.*is not of type 'object'"):
        load_manifest(_write(tmp_path, document))


def test_the_authors_artifacts_list_the_encoders_load_precomputed_maps_their_files_to():
    from asif_nb.precomputed import AUTHORS_ENCODERS

    by_modality = {"image": [], "text": []}
    for modality, ours in AUTHORS_ENCODERS.values():
        by_modality[modality].append(ours)
    entries = [entry for entry in load_manifest().values() if entry["id"].startswith("asif-embeddings-")]
    assert len(entries) == 3
    for entry in entries:
        assert entry["encoders"] == by_modality, entry["id"]


@pytest.mark.parametrize(
    "source",
    [{"type": "apt", "package": "x"}, {"type": "https", "url": "ftp://example.org/x"}, {"type": "carrier-pigeon"}],
)
def test_malformed_sources_are_refused(tmp_path, source):
    document = _document()
    document["artifacts"][2]["sources"] = [source]
    with pytest.raises(ValueError, match="dataset-fashion-mnist.*sources"):
        load_manifest(_write(tmp_path, document))


def test_duplicate_ids_are_refused(tmp_path):
    document = _document()
    document["artifacts"].append(copy.deepcopy(document["artifacts"][0]))
    with pytest.raises(ValueError, match="'tuxpaint-stamps-default' appears twice"):
        load_manifest(_write(tmp_path, document))


def test_unreadable_manifests_say_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_manifest(tmp_path / "nowhere.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_manifest(broken)


def test_every_file_has_a_byte_cap_and_drive_files_try_https_before_gdown():
    for entry in load_manifest().values():
        for file in entry["files"]:
            # download.DEFAULT_MAX_BYTES would cap the rest, but each packaged file states its own bound.
            assert file["bytes"] is not None or file.get("max_bytes"), (entry["id"], file["name"])
        types = [source["type"] for source in entry["sources"]]
        if "gdown" in types:  # drive.usercontent with confirm=t needs no cookie dance and streams under our limits
            assert "https" in types and types.index("https") < types.index("gdown"), entry["id"]


def test_max_bytes_must_be_a_positive_whole_number(tmp_path):
    document = _document()
    entry = next(e for e in document["artifacts"] if e["files"][0]["bytes"] is None)
    entry["files"][0]["max_bytes"] = 0
    with pytest.raises(ValueError, match=rf"{entry['id']}.*files/0/max_bytes"):
        load_manifest(_write(tmp_path, document))
