#!/usr/bin/env bash
# migmoverctl fsm-path --all agrees with an independent model of the kernel's FSM rule.
set -euo pipefail
dir="${TEST_SRCDIR}/migmover"
exec python3 "$dir/tests/conformance/fsm_path_all_check.py" "$dir/daemon/cli/migmoverctl"
