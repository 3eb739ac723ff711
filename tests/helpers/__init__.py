"""Shared test helpers: gradient checking, tolerances, layer and net builders."""
