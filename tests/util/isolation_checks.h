// The isolation baseline as stoke-probe reports it from inside a function
// (`stoke-probe isolation`, run by the function itself): the same checks for
// every start path (cold, prewarm, zygote, restore).
#pragma once

#include <nlohmann/json.hpp>

namespace stoke::test {

// Fails the current test (with the field's name) for anything short of the
// baseline: no capabilities, no_new_privs, seccomp filter mode, loopback only,
// read-only root, no host secrets or env, the denied syscalls, own pid ns.
void expect_isolation_baseline(const nlohmann::json& probe);

// A Python function body that runs the probe shipped at /code/stoke-probe
// and returns its report.
inline constexpr const char* kPythonProbeFunction = R"(
import json, subprocess
def main(args):
    out = subprocess.run(["/code/stoke-probe", "isolation"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
)";

}  // namespace stoke::test
