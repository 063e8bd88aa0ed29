"""Write the JSON Schema of the envelope and of every event to schemas/ (`make schema`).

A test regenerates them in memory and fails when the committed files are out of date.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from shared.events import SCHEMA_VERSION, json_schemas
from shared.foundation.storage import PROJECT_ROOT

SCHEMA_DIR = PROJECT_ROOT / "schemas"


def rendered() -> dict[str, str]:
    files = {f"{name}.schema.json": json.dumps(schema, indent=2, sort_keys=True) + "\n"
             for name, schema in json_schemas().items()}
    files["index.json"] = json.dumps({"schema_version": SCHEMA_VERSION,
                                      "events": sorted(files)}, indent=2) + "\n"
    return files


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.json"):
        stale.unlink()
    written = []
    for name, text in rendered().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


if __name__ == "__main__":
    paths = write(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_DIR)
    print(f"wrote {len(paths)} schema files (schema version {SCHEMA_VERSION}) to "
          f"{paths[0].parent}")
