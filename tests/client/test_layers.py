"""The app's domain stays free of Kivy, so it runs (and is tested) without a window."""

from __future__ import annotations

import subprocess
import sys


def test_services_vault_and_catalogs_import_no_kivy():
    code = (
        "import sys, client.vault, client.i18n, client.fonts, client.phone.location, client.phone.camera\n"
        "import client.services.setup, client.services.home, client.services.visits, client.services.cases\n"
        "import client.services.patrols, client.services.diary, client.services.words, client.services.sync_runner\n"
        "print(sorted(m for m in sys.modules if m == 'kivy' or m.startswith('kivy.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
