# The two commands of the README. Each sets up what it needs (venv, packages, model).
.PHONY: run test setup model lint

# Commands are not echoed: each step prints one line of its own.
setup:
	@./scripts/bootstrap.sh

model: setup
	@.venv/bin/spar model prepare

# Runs the embedded default: every service on loopback on CPU with the default model.
run: model
	@.venv/bin/spar up --demo

# Lint, type-check and the whole test suite (unit, integration, e2e).
test: model
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy spar services spar_cli bench
	.venv/bin/lint-imports --no-logo
	.venv/bin/pytest -q --durations=30
