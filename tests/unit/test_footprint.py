"""What a worker loads: each library it never uses costs every worker memory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Makes the application as a production worker does, then names the packages
# it loaded that it has no use for without Redis, the metrics or a cloud model.
REPORT = """
import sys
from tests.config import production_settings
from web.app import create_app
from pathlib import Path
create_app(settings=production_settings(Path(sys.argv[1])))
unused = ("pydantic", "attr", "attrs", "redis", "google", "openai", "boto3", "aiobotocore")
print(sorted({name.split(".")[0] for name in sys.modules} & set(unused)))
"""


def test_a_worker_loads_no_library_it_does_not_use(tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    done = subprocess.run(
        [sys.executable, "-c", REPORT, str(tmp_path)],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
