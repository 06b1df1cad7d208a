"""Daly smart BMS (A5 protocol). Placeholder until the plugin lands."""
