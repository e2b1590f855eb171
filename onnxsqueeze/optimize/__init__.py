"""The technique layer: functions that load, run passes, verify and report (one module per technique)."""
