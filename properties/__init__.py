"""YAML defaults of recbole-specgr, installed as the package ``recbole_specgr.properties`` (see setup.cfg)."""
