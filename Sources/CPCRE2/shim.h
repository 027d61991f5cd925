// libpcre2-8 (Debian libpcre2-dev), the 8-bit code unit library composefs-rs links.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
