// Capability facts the spawner needs before it clones, read with libcap.
//
// Dropping happens in the sandbox child with raw prctl/capset calls (it may not
// call into libc after clone(CLONE_VM)); this file supplies the number it needs.
#pragma once

namespace stoke {

// Highest capability number the running kernel knows (CAP_LAST_CAP), so the
// child can clear the whole bounding set even on a kernel newer than our headers.
int last_capability();

}  // namespace stoke
