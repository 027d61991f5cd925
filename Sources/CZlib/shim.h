// zlib (Debian zlib1g-dev), for gzip-compressed OCI layers.
#include <zlib.h>
