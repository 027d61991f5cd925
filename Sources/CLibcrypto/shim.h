// OpenSSL's libcrypto (Debian libssl-dev): its SHA-256 and SHA-512 are the fastest measured
// here (bench/RESULTS.md), SHA-512 by more than 2x.
// The low-level SHA API is deprecated in OpenSSL 3 but stays, and is the fast one for 4 KiB blocks.
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>
