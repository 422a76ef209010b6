/* jsonw.c - a tiny JSON writer for the bench's numbers: objects, arrays, keys, numbers,
 * strings, null. It tracks only whether a comma is due at each nesting level; the caller
 * nests correctly. Numbers that are not finite are written as null (JSON has no NaN).
 */
#include <math.h>
#include <stdio.h>

#include "bench.h"

static void jw_sep(struct jsonw *w)
{
    if (w->after_key) {
        w->after_key = 0;
        return;
    }
    if (w->depth > 0 && w->count[w->depth - 1]++ > 0)
        fputc(',', w->f);
}

static void jw_open(struct jsonw *w, char c)
{
    jw_sep(w);
    fputc(c, w->f);
    if (w->depth < JSONW_MAX_DEPTH)
        w->count[w->depth++] = 0;
}

static void jw_close(struct jsonw *w, char c)
{
    if (w->depth > 0)
        w->depth--;
    fputc(c, w->f);
    if (w->depth == 0)
        fputc('\n', w->f);
}

void jw_obj(struct jsonw *w)     { jw_open(w, '{'); }
void jw_obj_end(struct jsonw *w) { jw_close(w, '}'); }
void jw_arr(struct jsonw *w)     { jw_open(w, '['); }
void jw_arr_end(struct jsonw *w) { jw_close(w, ']'); }

static void jw_quoted(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;

        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

void jw_key(struct jsonw *w, const char *key)
{
    jw_sep(w);
    jw_quoted(w->f, key);
    fputc(':', w->f);
    w->after_key = 1;
}

void jw_num(struct jsonw *w, const char *key, double v)
{
    if (key)
        jw_key(w, key);
    jw_sep(w);
    if (isfinite(v))
        fprintf(w->f, "%.10g", v);
    else
        fputs("null", w->f);
}

void jw_str(struct jsonw *w, const char *key, const char *s)
{
    if (key)
        jw_key(w, key);
    jw_sep(w);
    if (s)
        jw_quoted(w->f, s);
    else
        fputs("null", w->f);
}
