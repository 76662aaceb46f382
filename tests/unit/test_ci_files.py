"""The Vagrantfile and the GitHub Actions workflow are checked by real tools.

`vagrant validate` (Debian's vagrant and vagrant-libvirt packages: validate
needs a provider, and checks the libvirt settings with it) runs when vagrant is
installed: .ci/run installs both (a CI-only tool: too heavy for every ./dev test),
and in CI a missing vagrant fails those tests. The workflow is linted by two PyPI tools from the dev
extra: check-jsonschema against SchemaStore's GitHub workflow schema (structure,
keys, types) and zizmor (semantics and security: unpinned actions, template
injection, credential leaks). Each linter is also shown a broken file, so a
linter that silently accepts everything would fail here.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]  # the checkout, where these files live
VAGRANTFILE = ROOT / "Vagrantfile"
WORKFLOW = ROOT / ".github" / "workflows" / "harness.yml"


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VAGRANT_CHECKPOINT_DISABLE": "1", "NO_COLOR": "1"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=180, check=False)


def venv_tool(name: str) -> str:
    """A dev-extra tool next to this interpreter (or on PATH); fail saying how to get it."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: install the dev extra, `pip install -e '.[dev]'` "
                    f"(./dev setup does it)")
    return found


# ----------------------------------------------------------------------------- Vagrantfile

def vagrant_validate(vagrantfile_text: str, where: Path) -> subprocess.CompletedProcess[str]:
    """Validate a copy in a scratch directory: vagrant leaves a .vagrant/ folder behind."""
    where.mkdir()
    (where / "Vagrantfile").write_text(vagrantfile_text)
    result = run(["vagrant", "validate"], cwd=where)
    if "No usable default provider" in result.stdout + result.stderr:
        pytest.fail("vagrant has no provider to validate the provider settings with: "
                    "apt-get install --no-install-recommends vagrant-libvirt")
    return result


@pytest.mark.needs_program("vagrant")
def test_vagrantfile_validates(tmp_path: Path) -> None:
    result = vagrant_validate(VAGRANTFILE.read_text(), tmp_path / "box")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.needs_program("vagrant")
def test_vagrant_validate_catches_a_bad_setting(tmp_path: Path) -> None:
    broken = VAGRANTFILE.read_text().replace("config.vm.hostname", "config.vm.hostnam")
    result = vagrant_validate(broken, tmp_path / "box")
    assert result.returncode != 0
    assert "hostnam" in result.stdout + result.stderr


def test_vagrantfile_is_debian_12_provisioned_by_dev_setup_with_nested_kvm() -> None:
    text = VAGRANTFILE.read_text()
    assert 'config.vm.box = "debian/bookworm64"' in text
    assert re.search(r'inline: "cd /harness && \./dev setup"', text)
    assert 'libvirt.nested = true' in text and 'libvirt.cpu_mode = "host-passthrough"' in text
    assert '"--nested-hw-virt", "on"' in text
    memory = re.search(r'HARNESS_VM_MEMORY", "(\d+)"', text)
    cpus = re.search(r'HARNESS_VM_CPUS", "(\d+)"', text)
    assert memory and int(memory[1]) >= 8192
    assert cpus and int(cpus[1]) >= 2


# ----------------------------------------------------------------------------- workflow

def check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    return run([venv_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
                str(path)], cwd=ROOT)


def zizmor(path: Path) -> subprocess.CompletedProcess[str]:
    return run([venv_tool("zizmor"), "--offline", "--no-progress", str(path)], cwd=ROOT)


def test_workflow_matches_the_github_workflow_schema() -> None:
    result = check_jsonschema(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_passes_zizmor() -> None:
    result = zizmor(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


def test_linters_reject_broken_workflows(tmp_path: Path) -> None:
    text = WORKFLOW.read_text()
    bad_schema = tmp_path / "bad-schema.yml"
    bad_schema.write_text(text.replace("runs-on: ubuntu-24.04", "runs_on: ubuntu-24.04"))
    assert check_jsonschema(bad_schema).returncode != 0
    unpinned = tmp_path / "unpinned.yml"
    unpinned.write_text(re.sub(r"actions/checkout@[0-9a-f]{40}", "actions/checkout@main", text))
    result = zizmor(unpinned)
    assert result.returncode != 0 and "unpinned" in result.stdout + result.stderr


def test_workflow_runs_the_suite_caches_and_publishes() -> None:
    text = WORKFLOW.read_text()
    assert re.search(r"\.ci/run --kernel \"\$KERNEL\" --arch x86_64 --arch arm64", text)
    assert 'kernels=["debian:5.10", "debian:7.2"]' in text
    assert 'KERNEL="git:$GITHUB_WORKSPACE/linux@$GITHUB_SHA"' in text
    assert "~/.cache/harness" in text
    assert "harness/runs/**/*.png" in text and "harness/runs/junit.xml" in text
    assert "publish-unit-test-result-action" in text
    assert 'HARNESS_REQUIRE_VM: "1"' in text


def test_workflow_bisects_on_demand_with_inputs_passed_through_env() -> None:
    text = WORKFLOW.read_text()
    assert "harness bisect --kernel \"git:$GITHUB_WORKSPACE/linux\" --good \"$GOOD\"" in text
    assert "GOOD: ${{ inputs.good }}" in text and "BAD: ${{ inputs.bad }}" in text
    assert "fetch-depth: 0" in text  # bisect needs the history between GOOD and BAD
    assert '"$GITHUB_STEP_SUMMARY"' in text and "tee runs/bisect.txt" in text


def test_ci_run_installs_the_ci_only_packages_and_passes_arguments_on() -> None:
    text = (ROOT / ".ci" / "run").read_text()
    assert "export HARNESS_REQUIRE_VM=1" in text
    assert "python3 harness/hostdeps.py --ci" in text
    last = text.rstrip().splitlines()[-1]
    assert last.startswith("exec ./dev test --junitxml=runs/junit.xml -n auto --timeout=")
    assert last.endswith('"$@"')
