import subprocess
import sys

from spot_optimizer import __version__


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spot_optimizer.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_version_prints_package_version() -> None:
    out = run_cli("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"spot-optimizer {__version__}"


def test_help_explains_the_tool() -> None:
    out = run_cli("--help")
    assert out.returncode == 0
    assert "spot" in out.stdout.lower()
