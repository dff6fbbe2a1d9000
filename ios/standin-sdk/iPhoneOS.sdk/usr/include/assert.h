/* Stand-in: assertions compiled out (a compile check, not a build to run). */
#define assert(e) ((void)0)
#define static_assert _Static_assert
