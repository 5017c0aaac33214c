"""write_export never loses the previous export: written beside ENC_DIR, swapped in, leftovers finished next time."""
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import tiny_encoder_meta

from alp_jax import encoder_api


@pytest.fixture(scope="module")
def encoders():
  """Two tiny encoders with different weights: step 1 (seed 0) and step 2 (seed 1)."""
  return [encoder_api.AudioEncoder.build({**tiny_encoder_meta(), "step": step}, seed=step - 1) for step in (1, 2)]


def _assert_loads_as(enc_dir, encoder):
  loaded = encoder_api.AudioEncoder.load(enc_dir)
  assert loaded.meta["step"] == encoder.meta["step"]
  for a, b in zip(jax.tree.leaves(loaded.encoder_params_pure()), jax.tree.leaves(encoder.encoder_params_pure())):
    np.testing.assert_array_equal(a, b)


def test_refused_target_gets_nothing_written_beside_it(tmp_path, encoders):
  (tmp_path / "run" / "checkpoints").mkdir(parents=True)
  (tmp_path / "run" / "config.json").write_text("{}")
  for out in (tmp_path / "run", tmp_path):
    with pytest.raises(FileExistsError, match="not an exported encoder"):
      encoders[0].save(out)
  assert sorted(os.listdir(tmp_path)) == ["run"]
  assert sorted(os.listdir(tmp_path / "run")) == ["checkpoints", "config.json"]


def test_killed_export_keeps_the_previous_one_and_the_next_export_cleans_up(tmp_path, encoders, monkeypatch):
  first, second = encoders
  out = tmp_path / "enc"
  first.save(out)
  (out / "README.txt").write_text("mine")
  save = ocp.StandardCheckpointer.save

  def write_half_then_die(self, directory, *args, **kwargs):
    os.makedirs(directory, exist_ok=True)
    open(os.path.join(directory, "half_written"), "w").close()
    raise RuntimeError("killed while writing params")

  monkeypatch.setattr(ocp.StandardCheckpointer, "save", write_half_then_die)
  with pytest.raises(RuntimeError, match="killed"):
    second.save(out)
  monkeypatch.setattr(ocp.StandardCheckpointer, "save", save)
  _assert_loads_as(out, first)
  assert [name for name in os.listdir(tmp_path) if name.startswith(".enc.tmp-")]   # the killed one's leftover
  second.save(out)
  _assert_loads_as(out, second)
  assert sorted(os.listdir(tmp_path)) == ["enc"] and (out / "README.txt").read_text() == "mine"


def test_killed_mid_swap_the_previous_export_is_put_back(tmp_path, encoders, monkeypatch):
  """Killed between renaming ENC_DIR aside and renaming the new one in: no ENC_DIR, load names the old folder,
  the next export puts it back (with your files) and replaces it."""
  first, second = encoders
  out = tmp_path / "enc"
  first.save(out)
  (out / "README.txt").write_text("mine")
  rename = os.rename

  def die_before_renaming_the_new_one_in(src, dst):
    if os.path.basename(src).startswith(".enc.tmp-"):
      assert not out.exists()   # the old one is aside already
      raise KeyboardInterrupt("killed mid-swap")
    rename(src, dst)

  monkeypatch.setattr(os, "rename", die_before_renaming_the_new_one_in)
  with pytest.raises(KeyboardInterrupt):
    second.save(out)
  monkeypatch.setattr(os, "rename", rename)
  assert not out.exists()
  with pytest.raises(FileNotFoundError, match=r"left the previous one in .*\.enc\.old-"):
    encoder_api.AudioEncoder.load(out)
  first.save(tmp_path / "other")   # another target's export leaves this one's leftovers alone
  assert not out.exists()
  second.save(out)
  _assert_loads_as(out, second)
  assert sorted(os.listdir(tmp_path)) == ["enc", "other"] and (out / "README.txt").read_text() == "mine"


def test_killed_before_the_old_export_is_deleted(tmp_path, encoders, monkeypatch):
  first, second = encoders
  out = tmp_path / "enc"
  first.save(out)
  rmtree = shutil.rmtree

  def die_before_deleting_the_old_one(path, *args, **kwargs):
    if os.path.basename(path).startswith(".enc.old-"):
      raise KeyboardInterrupt("killed")
    rmtree(path, *args, **kwargs)

  monkeypatch.setattr(shutil, "rmtree", die_before_deleting_the_old_one)
  with pytest.raises(KeyboardInterrupt):
    second.save(out)
  monkeypatch.undo()
  _assert_loads_as(out, second)
  assert [name for name in os.listdir(tmp_path) if name.startswith(".enc.old-")]
  first.save(out)
  _assert_loads_as(out, first)
  assert sorted(os.listdir(tmp_path)) == ["enc"]


def test_only_our_own_leftovers_are_deleted(tmp_path, encoders):
  """Folders that merely look like leftovers: foreign content, or a live process's export, stay."""
  out = tmp_path / "enc"
  foreign = tmp_path / ".enc.tmp-1-0badf00d"
  foreign.mkdir()
  (foreign / "notes.txt").write_text("not ours")
  live = tmp_path / f".enc.tmp-{os.getppid()}-deadbeef"
  (live / "params").mkdir(parents=True)
  unrelated = tmp_path / ".enc.tmp-old"
  (unrelated / "params").mkdir(parents=True)
  encoders[0].save(out)
  encoders[1].save(out)
  _assert_loads_as(out, encoders[1])
  assert sorted(os.listdir(tmp_path)) == sorted(["enc", foreign.name, live.name, unrelated.name])
