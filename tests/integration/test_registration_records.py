"""A model file is loaded only when it hashes to its registration record, not to a tag.

MLflow tags can be rewritten by anyone who may tag a version; the registration record is
written into cvloop's store by the registration transaction only (registry/records.py).
Attacks are made for real on the session stack: a file swapped in MLflow's artifact store
with its tag rewritten to match, a tag rewritten alone, a version with no record.
"""

from __future__ import annotations

import shutil

import pytest
from mlflow import MlflowClient

from cvloop.adapters.files import sha256_file
from registry.models import RegistryError
from tests.conftest import context
from tests.registered import register_copy_of_champion


def _swap_onnx(reg, version: str, tmp_path) -> str:
    """Replace best.onnx of ``version`` in MLflow's artifact store with other bytes and drop
    the local copy; returns the new file's sha256."""
    mv = reg.get_version(version)
    local = reg.fetch(version)
    evil = tmp_path / "swap" / "best.onnx"
    evil.parent.mkdir(parents=True, exist_ok=True)
    evil.write_bytes(local.onnx.read_bytes() + b"\0tampered")
    MlflowClient(reg.tracking_uri).log_artifact(mv.run_id, str(evil), "model")
    shutil.rmtree(reg.cache_dir / reg.name / str(version))
    return sha256_file(evil)


def test_registration_writes_the_record_the_files_are_checked_against(
    booted, tmp_path, stack_client_env
):
    reg = context().registry
    v = register_copy_of_champion(tmp_path, "records-ok", ())
    mv = reg.get_version(v)
    rec = reg.records.read(reg.name, v)
    assert rec is not None and rec.run_id == mv.run_id and rec.recorded_by == "registration"
    assert rec.sha256["onnx"] == mv.tags["cvloop.sha256.onnx"]
    assert rec.sha256["pt"] == mv.tags["cvloop.sha256.pt"]
    local = reg.fetch(v)
    assert local.sha256 == {"pt": rec.sha256["pt"], "onnx": rec.sha256["onnx"]}
    assert sha256_file(local.onnx) == rec.sha256["onnx"]


def test_a_swapped_file_with_its_tag_rewritten_to_match_is_refused(
    booted, tmp_path, stack_client_env
):
    reg = context().registry
    v = register_copy_of_champion(tmp_path, "records-swap", ())
    recorded = reg.records.read(reg.name, v).sha256["onnx"]
    evil = _swap_onnx(reg, v, tmp_path)
    reg.set_tags(v, {"cvloop.sha256.onnx": evil})  # what a tag-only check would believe
    with pytest.raises(RegistryError) as info:
        reg.fetch(v)
    assert "was changed after the registration" in info.value.message
    assert evil[:12] in info.value.message and recorded[:12] in info.value.message
    # the tag put back, the swapped file is still refused: by its hash against the record
    reg.set_tags(v, {"cvloop.sha256.onnx": recorded})
    with pytest.raises(RegistryError) as info:
        reg.fetch(v)
    assert "checksum mismatch for best.onnx" in info.value.message
    assert "registration record" in info.value.message
    # and the server refuses it the same way (it loads through the registry)
    from cvloop.serving.models import ModelRefused, load_model

    with pytest.raises(ModelRefused, match=f"model version {v} refused: checksum mismatch"):
        load_model(reg, v, runtime="onnxruntime", threads=1)


def test_a_version_without_a_record_is_refused_until_someone_vouches_for_it(
    booted, tmp_path, stack_client_env
):
    reg = context().registry
    v = register_copy_of_champion(tmp_path, "records-none", ())
    reg.records.delete(reg.name, v)  # as a version made by hand in MLflow would be
    shutil.rmtree(reg.cache_dir / reg.name / str(v), ignore_errors=True)
    with pytest.raises(RegistryError) as info:
        reg.fetch(v)
    assert "has no registration record" in info.value.message
    assert f"cvloop registry trust {v}" in info.value.fix
    out = booted.stack.cli("registry", "trust", v, "--reason", "checked by hand", env=booted.env)
    assert f"v{v}: recorded best.pt" in out.stdout
    rec = reg.records.read(reg.name, v)
    assert rec.recorded_by.startswith("trust by ") and rec.note == "checked by hand"
    assert reg.fetch(v).sha256["onnx"] == rec.sha256["onnx"]


def test_vouching_never_accepts_files_that_do_not_match_their_tags(
    booted, tmp_path, stack_client_env
):
    reg = context().registry
    v = register_copy_of_champion(tmp_path, "records-bad-trust", ())
    _swap_onnx(reg, v, tmp_path)
    reg.records.delete(reg.name, v)
    out = booted.stack.cli("registry", "trust", v, "--reason", "looks fine", env=booted.env,
                           check=False)  # fmt: skip
    assert out.returncode != 0
    assert "checksum mismatch for best.onnx" in out.stdout + out.stderr
    assert reg.records.read(reg.name, v) is None


def test_a_store_from_before_records_is_migrated_once_from_the_tags(
    booted, tmp_path, stack_client_env
):
    """An installation upgraded to records has none at all: each version's files are checked
    against their tags once and recorded; from then on the record decides."""
    reg = context().registry
    v = register_copy_of_champion(tmp_path, "records-migrate", ())
    store = reg.records.store
    keys = store.keys(f"registry-records/{reg.name}/")
    saved = {k: store.get_bytes(k) for k in keys}
    try:
        for k in keys:
            store.delete(k)
        shutil.rmtree(reg.cache_dir / reg.name / str(v), ignore_errors=True)
        local = reg.fetch(v)
        rec = reg.records.read(reg.name, v)
        assert rec.recorded_by == "migration" and rec.sha256["onnx"] == local.sha256["onnx"]
        reg.set_tags(v, {"cvloop.sha256.onnx": "0" * 64})  # now a rewritten tag is refused
        with pytest.raises(RegistryError, match="was changed after the registration"):
            reg.fetch(v)
    finally:
        for k, data in saved.items():
            store.put_bytes(k, data)
