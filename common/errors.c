/* errors.c - see errors.h. */
#include "common/errors.h"

#include <errno.h>
#include <string.h>

const char *err_name(int err)
{
    if (err < 0)
        err = -err;
    const char *n = strerrorname_np(err);
    return n ? n : "E?";
}

const char *err_str(int err)
{
    if (err < 0)
        err = -err;
    const char *d = strerrordesc_np(err);
    return d ? d : "unknown error";
}
