// OpenSSL's libcrypto (Debian libssl-dev): its SHA-256 and SHA-512 are the fastest measured
// here (bench/RESULTS.md), SHA-512 by more than 2x.
#include <openssl/sha.h>
