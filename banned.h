/*
 * banned.h - functions we do not call (git, curl); a use is a compile
 * error.  util.h includes it last, so it must come after the system
 * headers (which declare these names themselves).
 */
#ifndef SNAPCTL_BANNED_H
#define SNAPCTL_BANNED_H

#define BANNED(func) sorry_##func##_is_banned_in_snapctl

#undef strcpy
#define strcpy(x, y) BANNED(strcpy)
#undef strcat
#define strcat(x, y) BANNED(strcat)
#undef strncpy
#define strncpy(x, y, n) BANNED(strncpy)
#undef strncat
#define strncat(x, y, n) BANNED(strncat)
#undef sprintf
#define sprintf(...) BANNED(sprintf)
#undef vsprintf
#define vsprintf(...) BANNED(vsprintf)
#undef strtok
#define strtok(x, y) BANNED(strtok)
#undef atoi
#define atoi(x) BANNED(atoi)
#undef atol
#define atol(x) BANNED(atol)
#undef gets
#define gets(x) BANNED(gets)

#endif
