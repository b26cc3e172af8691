/* tokdata.h — pre-tokenized training data: the token file (reader, writer), cutting it into
 * fixed-length rows (packed or one document per row) with targets, positions and document
 * ids, and the seeded per-epoch row order. The file layout is described in docs/formats.md,
 * section "token data". */
#ifndef FTC_TOKDATA_H
#define FTC_TOKDATA_H

#include <stddef.h>
#include <stdint.h>

#include "../common/common.h"

#define TD_MAGIC "FTCTOKD" /* 8 bytes with its NUL */
#define TD_VERSION 1u
#define TD_HEADER_BYTES 40
#define TD_IGNORE (-100) /* target value of a position that is not trained on */

/* An open token file; the arrays point into a read-only mapping. */
typedef struct {
    char *path;
    void *map;
    size_t size;
    uint32_t vocab_needed; /* max token id + 1 */
    int64_t ntokens, ndocs;
    const int32_t *tokens;     /* [ntokens] */
    const uint8_t *mask;       /* [ntokens], 1 = the token counts as a target */
    const uint64_t *doc_start; /* [ndocs + 1]: 0, ..., ntokens, strictly increasing */
} td_file_t;

/* Maps and validates a token file (magic, version, sizes, checksum, document offsets,
 * token values). On failure f is left empty (td_close is still safe). */
int td_open(td_file_t *f, const char *path, ft_err_t *e);
void td_close(td_file_t *f);

/* Writes a token file atomically. mask may be NULL (every token a target); doc_start has
 * ndocs + 1 entries, starting at 0 and ending at ntokens, strictly increasing. */
int td_write(const char *path, const int32_t *tokens, const uint8_t *mask, int64_t ntokens,
             const uint64_t *doc_start, int64_t ndocs, ft_err_t *e);

/* Rows of seq_len tokens. Packing on: all documents form one stream, row r covers stream
 * positions [r*S, r*S+S], and there are (ntokens-1)/S rows. Packing off: row r is
 * document r, truncated to S+1 tokens and padded; there are ndocs rows.
 * Returns the row count (>= 1), or -1 with e set. */
int64_t td_nrows(const td_file_t *f, int64_t seq_len, int packing, ft_err_t *e);

/* Fills row r: tokens, targets (next token, or TD_IGNORE where it is masked, starts another
 * document, or is padding), pos (offset within the document, restarting at 0 at each
 * document start; continuing through padding) and doc (the document index modulo 2^31 for
 * real tokens, so equal exactly within a document; -1 for padding). Each array holds
 * seq_len entries. */
int td_batch(const td_file_t *f, int64_t seq_len, int packing, int64_t r, int32_t *tokens, int32_t *targets,
             int32_t *pos, int32_t *doc, ft_err_t *e);

/* How many targets are not TD_IGNORE. */
int64_t td_count_targets(const int32_t *targets, int64_t n);

/* The training order of rows: step k reads row td_row_for(o, nrows, seed, k). Epoch
 * k / nrows is a permutation of all rows drawn from (seed, epoch) with splitmix64 and
 * Fisher-Yates; the caller owns `o` (zero-initialise it, or td_order_init) and it caches the
 * permutation of the latest epoch, so a call allocates only when the epoch changes. The
 * result depends only on (nrows, seed, k), which makes resuming exact. */
typedef struct {
    int64_t nrows;
    uint64_t seed;
    int64_t epoch;
    int64_t *perm; /* NULL until first use */
} td_order_t;

void td_order_init(td_order_t *o);
void td_order_free(td_order_t *o);
int64_t td_row_for(td_order_t *o, int64_t nrows, uint64_t seed, int64_t k);

/* The splitmix64 step the order uses: advances *state and returns the next value. */
uint64_t td_splitmix64(uint64_t *state);

#endif
