// The protocol's constants are all in the header; this file keeps the library
// non-empty until the framing and client land beside it.
#include "api/wire/protocol.h"
