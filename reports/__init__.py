"""Reports: the JSON document, its renderings (text, markdown, JUnit, HTML), metrics and verdicts."""
