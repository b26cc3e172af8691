/* tokdata.c — the token data file (mmap reader with full validation, atomic writer), row
 * batching with and without packing, and the seeded per-epoch row permutation. Hosts are
 * assumed little-endian, as the file is. */
#include "tokdata.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "tokdata.c assumes a little-endian host"
#endif

/* Counts beyond these are treated as a corrupt header (2^56 tokens is ~300 PB of file). */
#define TD_MAX_COUNT (1ull << 56)

typedef struct {
    char magic[8];
    uint32_t version;
    uint32_t vocab_needed;
    uint64_t ntokens;
    uint64_t ndocs;
    uint64_t checksum;
} td_header_t;
_Static_assert(sizeof(td_header_t) == TD_HEADER_BYTES, "token file header is 40 bytes");
_Static_assert(sizeof TD_MAGIC == 8, "magic is 8 bytes with its NUL");

static uint64_t align8(uint64_t x)
{
    return (x + 7) & ~(uint64_t)7;
}

/* Byte offsets of the sections for given counts (counts below TD_MAX_COUNT). */
static uint64_t mask_offset(uint64_t ntok)
{
    return TD_HEADER_BYTES + 4 * ntok;
}

static uint64_t docs_offset(uint64_t ntok)
{
    return align8(mask_offset(ntok) + ntok);
}

static uint64_t file_bytes(uint64_t ntok, uint64_t ndocs)
{
    return docs_offset(ntok) + 8 * (ndocs + 1);
}

/* ---- reader ---- */

void td_close(td_file_t *f)
{
    if (f->map)
        munmap(f->map, f->size);
    free(f->path);
    memset(f, 0, sizeof *f);
}

static int map_file(td_file_t *f, ft_err_t *e)
{
    if (ft_map_file(f->path, &f->map, &f->size, e) != 0)
        return -1;
    if (f->size >= TD_HEADER_BYTES)
        return 0;
    ft_unmap_file(f->map, f->size);
    f->map = NULL;
    if (f->size == 0)
        return ft_fail(e, "%s: empty file (0 bytes), not a token data file", f->path);
    return ft_fail(e, "%s: file is %zu bytes, shorter than the %d-byte token data header (truncated?)", f->path,
                   f->size, TD_HEADER_BYTES);
}

static int check_header(const td_file_t *f, const td_header_t *h, ft_err_t *e)
{
    if (memcmp(h->magic, TD_MAGIC, 8) != 0)
        return ft_fail(e, "%s: bad magic, not an ftc token data file (expected \"FTCTOKD\")", f->path);
    if (h->version != TD_VERSION)
        return ft_fail(e, "%s: unsupported format version %u (this build reads version %u)", f->path,
                       h->version, TD_VERSION);
    if (h->ntokens == 0)
        return ft_fail(e, "%s: holds zero tokens", f->path);
    if (h->ntokens >= TD_MAX_COUNT || h->ndocs >= TD_MAX_COUNT)
        return ft_fail(e, "%s: header counts are absurd (%" PRIu64 " tokens, %" PRIu64 " documents): corrupt",
                       f->path, h->ntokens, h->ndocs);
    if (h->ndocs == 0)
        return ft_fail(e, "%s: holds %" PRIu64 " tokens but zero documents", f->path, h->ntokens);
    uint64_t want = file_bytes(h->ntokens, h->ndocs);
    if (f->size < want)
        return ft_fail(e, "%s: file is %zu bytes but its header promises %" PRIu64 " (truncated?)", f->path,
                       f->size, want);
    if (f->size > want)
        return ft_fail(e, "%s: file is %zu bytes but its header describes %" PRIu64 " (trailing data)", f->path,
                       f->size, want);
    return 0;
}

static int check_body(const td_file_t *f, ft_err_t *e)
{
    const unsigned char *base = f->map;
    for (uint64_t i = mask_offset((uint64_t)f->ntokens) + (uint64_t)f->ntokens; i < docs_offset((uint64_t)f->ntokens); i++)
        if (base[i] != 0)
            return ft_fail(e, "%s: non-zero padding byte at %" PRIu64 ": corrupt", f->path, i);
    const uint64_t *ds = f->doc_start;
    if (ds[0] != 0)
        return ft_fail(e, "%s: doc_start[0] is %" PRIu64 ", not 0: corrupt", f->path, ds[0]);
    for (int64_t d = 0; d < f->ndocs; d++)
        if (ds[d + 1] <= ds[d])
            return ft_fail(e, "%s: document offsets are not strictly increasing at document %" PRId64 ": corrupt",
                           f->path, d);
    if (ds[f->ndocs] != (uint64_t)f->ntokens)
        return ft_fail(e, "%s: last document ends at %" PRIu64 ", not at the token count %" PRId64 ": corrupt",
                       f->path, ds[f->ndocs], f->ntokens);
    for (int64_t i = 0; i < f->ntokens; i++) {
        int32_t t = f->tokens[i];
        if (t < 0)
            return ft_fail(e, "%s: token %" PRId64 " is negative (%d): corrupt", f->path, i, t);
        if ((uint32_t)t >= f->vocab_needed)
            return ft_fail(e, "%s: token %" PRId64 " is %d, not below vocab_needed %u: corrupt", f->path, i, t,
                           f->vocab_needed);
        if (f->mask[i] > 1)
            return ft_fail(e, "%s: loss mask %" PRId64 " is %u, not 0 or 1: corrupt", f->path, i, f->mask[i]);
    }
    return 0;
}

static int open_checked(td_file_t *f, ft_err_t *e)
{
    if (map_file(f, e) != 0)
        return -1;
    td_header_t h;
    memcpy(&h, f->map, sizeof h);
    if (check_header(f, &h, e) != 0)
        return -1;
    const unsigned char *base = f->map;
    uint64_t sum = ft_fnv1a(FT_FNV_INIT, base + TD_HEADER_BYTES, f->size - TD_HEADER_BYTES);
    if (sum != h.checksum)
        return ft_fail(e, "%s: checksum mismatch (header says %016" PRIx64 ", data gives %016" PRIx64
                       "): the file is corrupt", f->path, h.checksum, sum);
    f->vocab_needed = h.vocab_needed;
    f->ntokens = (int64_t)h.ntokens;
    f->ndocs = (int64_t)h.ndocs;
    f->tokens = (const int32_t *)(base + TD_HEADER_BYTES);
    f->mask = base + mask_offset(h.ntokens);
    f->doc_start = (const uint64_t *)(base + docs_offset(h.ntokens));
    return check_body(f, e);
}

int td_open(td_file_t *f, const char *path, ft_err_t *e)
{
    memset(f, 0, sizeof *f);
    f->path = ft_xstrdup(path);
    if (open_checked(f, e) == 0)
        return 0;
    td_close(f);
    return -1;
}

/* ---- writer ---- */

/* The body goes either into a running checksum or into the file; the writer runs it twice. */
typedef struct {
    ft_atomic_t *a; /* NULL: only hash */
    uint64_t hash;
} td_sink_t;

static int sink_put(td_sink_t *s, const void *p, size_t n, ft_err_t *e)
{
    if (!s->a) {
        s->hash = ft_fnv1a(s->hash, p, n);
        return 0;
    }
    return ft_atomic_write(s->a, p, n, e);
}

static int emit_body(td_sink_t *s, const int32_t *tokens, const uint8_t *mask, int64_t ntok,
                     const uint64_t *doc_start, int64_t ndocs, ft_err_t *e)
{
    static const unsigned char zeros[8];
    unsigned char ones[4096];
    if (sink_put(s, tokens, (size_t)ntok * 4, e) != 0)
        return -1;
    if (mask) {
        if (sink_put(s, mask, (size_t)ntok, e) != 0)
            return -1;
    } else {
        memset(ones, 1, sizeof ones);
        for (int64_t i = 0; i < ntok; i += (int64_t)sizeof ones) {
            size_t n = (size_t)(ntok - i) < sizeof ones ? (size_t)(ntok - i) : sizeof ones;
            if (sink_put(s, ones, n, e) != 0)
                return -1;
        }
    }
    uint64_t pad = docs_offset((uint64_t)ntok) - mask_offset((uint64_t)ntok) - (uint64_t)ntok;
    if (sink_put(s, zeros, (size_t)pad, e) != 0)
        return -1;
    return sink_put(s, doc_start, (size_t)(ndocs + 1) * 8, e);
}

static int check_input(const char *path, const int32_t *tokens, const uint8_t *mask, int64_t ntok,
                       const uint64_t *doc_start, int64_t ndocs, uint32_t *vocab, ft_err_t *e)
{
    if (ntok <= 0)
        return ft_fail(e, "%s: refusing to write a token file with %" PRId64 " tokens", path, ntok);
    if (ndocs <= 0 || (uint64_t)ntok >= TD_MAX_COUNT || (uint64_t)ndocs >= TD_MAX_COUNT)
        return ft_fail(e, "%s: bad document count %" PRId64, path, ndocs);
    if (doc_start[0] != 0 || doc_start[ndocs] != (uint64_t)ntok)
        return ft_fail(e, "%s: doc_start must run from 0 to the token count %" PRId64, path, ntok);
    for (int64_t d = 0; d < ndocs; d++)
        if (doc_start[d + 1] <= doc_start[d])
            return ft_fail(e, "%s: document %" PRId64 " is empty or offsets decrease", path, d);
    int32_t max = 0;
    for (int64_t i = 0; i < ntok; i++) {
        if (tokens[i] < 0)
            return ft_fail(e, "%s: token %" PRId64 " is negative (%d)", path, i, tokens[i]);
        if (mask && mask[i] > 1)
            return ft_fail(e, "%s: loss mask %" PRId64 " is %u, not 0 or 1", path, i, mask[i]);
        if (tokens[i] > max)
            max = tokens[i];
    }
    *vocab = (uint32_t)max + 1;
    return 0;
}

int td_write(const char *path, const int32_t *tokens, const uint8_t *mask, int64_t ntokens,
             const uint64_t *doc_start, int64_t ndocs, ft_err_t *e)
{
    td_header_t h;
    memset(&h, 0, sizeof h);
    if (check_input(path, tokens, mask, ntokens, doc_start, ndocs, &h.vocab_needed, e) != 0)
        return -1;
    memcpy(h.magic, TD_MAGIC, 8);
    h.version = TD_VERSION;
    h.ntokens = (uint64_t)ntokens;
    h.ndocs = (uint64_t)ndocs;
    td_sink_t hs = {NULL, FT_FNV_INIT};
    emit_body(&hs, tokens, mask, ntokens, doc_start, ndocs, e);
    h.checksum = hs.hash;
    ft_atomic_t a;
    if (ft_atomic_open(&a, path, e) != 0)
        return -1;
    td_sink_t ws = {&a, 0};
    if (ft_atomic_write(&a, &h, sizeof h, e) != 0 || emit_body(&ws, tokens, mask, ntokens, doc_start, ndocs, e) != 0) {
        ft_atomic_abort(&a);
        return -1;
    }
    return ft_atomic_commit(&a, e);
}

/* ---- batching ---- */

int64_t td_nrows(const td_file_t *f, int64_t seq_len, int packing, ft_err_t *e)
{
    if (seq_len <= 0 || seq_len > INT32_MAX)
        return ft_fail(e, "%s: seq_len %" PRId64 " is out of range", f->path, seq_len);
    if (!packing)
        return f->ndocs;
    if (f->ntokens - 1 < seq_len)
        return ft_fail(e, "%s: data file has %" PRId64 " tokens, fewer than seq_len+1 (%" PRId64 ")", f->path,
                       f->ntokens, seq_len + 1);
    return (f->ntokens - 1) / seq_len;
}

/* The document holding stream position p: the last d with doc_start[d] <= p. */
static int64_t doc_of(const td_file_t *f, int64_t p)
{
    int64_t lo = 0, hi = f->ndocs - 1;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo + 1) / 2;
        if (f->doc_start[mid] <= (uint64_t)p)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* Target for the input at stream position p (whose document is d): the next token unless
 * it is masked off or opens the next document. */
static int32_t target_at(const td_file_t *f, int64_t p, int64_t d)
{
    int64_t q = p + 1;
    if ((uint64_t)q >= f->doc_start[d + 1] || !f->mask[q])
        return TD_IGNORE;
    return f->tokens[q];
}

static int batch_packed(const td_file_t *f, int64_t S, int64_t r, int32_t *tok, int32_t *tgt, int32_t *pos,
                        int32_t *doc, ft_err_t *e)
{
    int64_t p0 = r * S;
    int64_t d = doc_of(f, p0);
    for (int64_t i = 0; i < S; i++) {
        int64_t p = p0 + i;
        while ((uint64_t)p >= f->doc_start[d + 1])
            d++;
        uint64_t off = (uint64_t)p - f->doc_start[d];
        if (off > INT32_MAX)
            return ft_fail(e, "%s: document %" PRId64 " is too long for 32-bit positions", f->path, d);
        tok[i] = f->tokens[p];
        tgt[i] = target_at(f, p, d);
        pos[i] = (int32_t)off;
        doc[i] = (int32_t)(d & 0x7fffffff);
    }
    return 0;
}

static void batch_doc(const td_file_t *f, int64_t S, int64_t r, int32_t *tok, int32_t *tgt, int32_t *pos,
                      int32_t *doc)
{
    int64_t a = (int64_t)f->doc_start[r];
    int64_t len = (int64_t)f->doc_start[r + 1] - a;
    for (int64_t i = 0; i < S; i++) {
        pos[i] = (int32_t)i;
        if (i < len) {
            tok[i] = f->tokens[a + i];
            tgt[i] = target_at(f, a + i, r);
            doc[i] = (int32_t)(r & 0x7fffffff);
        } else {
            tok[i] = 0;
            tgt[i] = TD_IGNORE;
            doc[i] = -1;
        }
    }
}

int td_batch(const td_file_t *f, int64_t seq_len, int packing, int64_t r, int32_t *tokens, int32_t *targets,
             int32_t *pos, int32_t *doc, ft_err_t *e)
{
    int64_t nrows = td_nrows(f, seq_len, packing, e);
    if (nrows < 0)
        return -1;
    if (r < 0 || r >= nrows)
        return ft_fail(e, "%s: row %" PRId64 " is out of range (%" PRId64 " rows of %" PRId64 " tokens)", f->path,
                       r, nrows, seq_len);
    if (packing)
        return batch_packed(f, seq_len, r, tokens, targets, pos, doc, e);
    batch_doc(f, seq_len, r, tokens, targets, pos, doc);
    return 0;
}

int64_t td_count_targets(const int32_t *targets, int64_t n)
{
    int64_t c = 0;
    for (int64_t i = 0; i < n; i++)
        c += targets[i] != TD_IGNORE;
    return c;
}

/* ---- row order ---- */

uint64_t td_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, bound), without modulo bias. */
static uint64_t below(uint64_t *state, uint64_t bound)
{
    uint64_t threshold = (0 - bound) % bound; /* 2^64 mod bound */
    for (;;) {
        uint64_t x = td_splitmix64(state);
        if (x >= threshold)
            return x % bound;
    }
}

static void build_perm(td_order_t *o)
{
    for (int64_t i = 0; i < o->nrows; i++)
        o->perm[i] = i;
    uint64_t state = o->seed ^ ((uint64_t)(o->epoch + 1) * 0xd1b54a32d192ed03ull);
    td_splitmix64(&state);
    for (int64_t i = o->nrows - 1; i > 0; i--) {
        int64_t j = (int64_t)below(&state, (uint64_t)i + 1);
        int64_t t = o->perm[i];
        o->perm[i] = o->perm[j];
        o->perm[j] = t;
    }
}

void td_order_init(td_order_t *o)
{
    memset(o, 0, sizeof *o);
}

void td_order_free(td_order_t *o)
{
    free(o->perm);
    memset(o, 0, sizeof *o);
}

int64_t td_row_for(td_order_t *o, int64_t nrows, uint64_t seed, int64_t k)
{
    if (nrows <= 0 || k < 0)
        return -1;
    int64_t epoch = k / nrows;
    if (!o->perm || o->nrows != nrows || o->seed != seed || o->epoch != epoch) {
        if (!o->perm || o->nrows != nrows)
            o->perm = ft_xrealloc(o->perm, (size_t)nrows * sizeof *o->perm);
        o->nrows = nrows;
        o->seed = seed;
        o->epoch = epoch;
        build_perm(o);
    }
    return o->perm[k % nrows];
}
