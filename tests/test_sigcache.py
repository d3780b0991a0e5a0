"""The component cache: a warm run gives exactly the cold run's answers, without importing torch."""

import json
import os
import subprocess
import sys
import textwrap

from helpers import LORA_1B, write_experiment

CHECK = textwrap.dedent("""
    import sys, json
    from torchtune_config_writer import generate_configs
    from torchtune_config_writer.errors import ConfigWriterError
    try:
        r = generate_configs(sys.argv[1], write=False)
        out = [p.message for p in r.problems]
    except ConfigWriterError as e:
        out = str(e)
    print(json.dumps({"result": out, "torch_imported": "torch" in sys.modules}))
""")

BAD = f"""experiment_name: bad
base_config: {LORA_1B}
variables:
  optimizer._component_: [torch.optim.AdamW, torch.optim.AdamWW]
controls:
  dataset:
    _component_: torchtune.datasets.alpaca_dataset
    sourc: json
  model.lora_rank: 4
  checkpointer.model_type: LLAMA9
"""


def run_check(path, cache, extra_path=None):
    env = dict(os.environ, TORCHTUNE_CONFIG_WRITER_CACHE=str(cache))
    if extra_path:
        env["PYTHONPATH"] = f"{extra_path}{os.pathsep}{env.get('PYTHONPATH', '')}"
    res = subprocess.run([sys.executable, "-c", CHECK, str(path)], capture_output=True, text=True, env=env, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_warm_run_matches_cold_run_without_importing_torch(tmp_path):
    path = write_experiment(tmp_path, BAD)
    cold = run_check(path, tmp_path / "cache")
    warm = run_check(path, tmp_path / "cache")
    assert cold["torch_imported"] and not warm["torch_imported"]
    assert warm["result"] == cold["result"]
    text = str(cold["result"])
    assert "AdamWW" in text and "'sourc'" in text and "LLAMA9" in text


def test_cache_off_and_other_versions_are_not_read(tmp_path):
    path = write_experiment(tmp_path, BAD)
    cache = tmp_path / "cache"
    run_check(path, cache)
    (stored,) = cache.iterdir()
    data = json.loads(stored.read_text())
    poisoned = {k: (["poisoned answer"] if k.startswith('["component"') else v) for k, v in data.items()}
    # a file for other package versions is never read
    stored.rename(cache / "components-0000000000000000.json")
    (cache / "components-0000000000000000.json").write_text(json.dumps(poisoned))
    assert "poisoned answer" not in str(run_check(path, cache)["result"])
    # the matching file is what a warm run trusts (so the name must carry the versions)
    stored.write_text(json.dumps(poisoned))
    assert "poisoned answer" in str(run_check(path, cache)["result"])
    assert "poisoned answer" not in str(run_check(path, "off")["result"])


def test_components_outside_installed_packages_are_never_cached(tmp_path):
    pkg = tmp_path / "mycode"
    pkg.mkdir()
    (pkg / "mymodels.py").write_text("def build(width=1):\n    return width\n")
    path = write_experiment(tmp_path, f"experiment_name: own\nbase_config: {LORA_1B}\ncontrols:\n"
                                      "  model:\n    _component_: mymodels.build\n    depth: 2\n")
    first = run_check(path, tmp_path / "cache", extra_path=pkg)
    assert "does not accept argument 'depth'" in str(first["result"])
    (pkg / "mymodels.py").write_text("def build(width=1, depth=1):\n    return width\n")
    assert run_check(path, tmp_path / "cache", extra_path=pkg)["result"] == []
