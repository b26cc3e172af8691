/* test_tokdata.c — the token data file (round trip, malformed files), batching with and
 * without packing against hand-worked rows, the seeded row order, and, when the built
 * ftdata program can be found ($FTC_BIN/ftdata), the text and JSONL converters. */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"
#include "runtime/tokdata.h"
#include "tests/check.h"

static char tmpdir[64];

static void tpath(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", tmpdir, name);
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(2);
    }
    if (n)
        fwrite(p, 1, n, f);
    fclose(f);
}

static void expect_fail(const char *path, const char *phrase)
{
    td_file_t f;
    ft_err_t e = {{0}};
    int rc = td_open(&f, path, &e);
    CHECK_MSG(rc == -1, "%s: td_open succeeded, expected '%s'", path, phrase);
    CHECK_MSG(strstr(e.msg, phrase) != NULL, "message '%s' lacks '%s'", e.msg, phrase);
    CHECK_MSG(strstr(e.msg, path) != NULL, "message '%s' does not name %s", e.msg, path);
    CHECK(f.map == NULL && f.ntokens == 0);
    td_close(&f);
}

/* The three documents the batching tests work by hand:
 *   stream  0  1  2 | 3  4 | 5  6  7  8
 *   token  10 11 12 |20 21 |30 31 32 33
 *   mask    0  1  1 | 0  1 | 0  1  0  1 */
static const int32_t TOK[9] = {10, 11, 12, 20, 21, 30, 31, 32, 33};
static const uint8_t MASK[9] = {0, 1, 1, 0, 1, 0, 1, 0, 1};
static const uint64_t DOCS[4] = {0, 3, 5, 9};

/* A raw file image with a correct checksum, bypassing td_write's checks. */
static size_t raw_image(unsigned char *buf, uint32_t version, uint32_t vocab, const int32_t *tok,
                        const uint8_t *mask, uint64_t ntok, const uint64_t *docs, uint64_t ndocs)
{
    size_t off = 40;
    memcpy(buf + off, tok, ntok * 4);
    off += ntok * 4;
    memcpy(buf + off, mask, ntok);
    off += ntok;
    while (off % 8)
        buf[off++] = 0;
    memcpy(buf + off, docs, (ndocs + 1) * 8);
    off += (ndocs + 1) * 8;
    uint64_t sum = ft_fnv1a(FT_FNV_INIT, buf + 40, off - 40);
    memcpy(buf, "FTCTOKD", 8);
    memcpy(buf + 8, &version, 4);
    memcpy(buf + 12, &vocab, 4);
    memcpy(buf + 16, &ntok, 8);
    memcpy(buf + 24, &ndocs, 8);
    memcpy(buf + 32, &sum, 8);
    return off;
}

static void test_round_trip(void)
{
    char p[256];
    tpath(p, sizeof p, "rt.tok");
    ft_err_t e = {{0}};
    CHECK_MSG(td_write(p, TOK, MASK, 9, DOCS, 3, &e) == 0, "%s", e.msg);
    td_file_t f;
    CHECK_MSG(td_open(&f, p, &e) == 0, "%s", e.msg);
    CHECK(f.ntokens == 9 && f.ndocs == 3 && f.vocab_needed == 34);
    CHECK(f.tokens && memcmp(f.tokens, TOK, sizeof TOK) == 0);
    CHECK(f.mask && memcmp(f.mask, MASK, sizeof MASK) == 0);
    CHECK(f.doc_start && memcmp(f.doc_start, DOCS, sizeof DOCS) == 0);
    /* size: 40 header + 36 tokens + 9 mask = 85, padded to 88, + 4 offsets * 8 = 120 */
    CHECK(f.size == 120);
    td_close(&f);
    td_close(&f);

    /* the writer's bytes equal the hand-built image */
    unsigned char want[256];
    size_t n = raw_image(want, 1, 34, TOK, MASK, 9, DOCS, 3);
    char *got = NULL;
    size_t gn = 0;
    CHECK(ft_read_file(p, &got, &gn, &e) == 0 && gn == n && memcmp(got, want, n) == 0);
    free(got);

    /* mask NULL: every token a target */
    CHECK(td_write(p, TOK, NULL, 9, DOCS, 3, &e) == 0);
    CHECK(td_open(&f, p, &e) == 0);
    int all = 1;
    for (int i = 0; i < 9; i++)
        all &= f.mask[i] == 1;
    CHECK(all);
    td_close(&f);
}

static void test_writer_errors(void)
{
    char p[256];
    tpath(p, sizeof p, "werr.tok");
    ft_err_t e = {{0}};
    CHECK(td_write(p, TOK, MASK, 0, DOCS, 0, &e) == -1 && strstr(e.msg, "with 0 tokens"));
    int32_t neg[9];
    memcpy(neg, TOK, sizeof neg);
    neg[4] = -1;
    CHECK(td_write(p, neg, MASK, 9, DOCS, 3, &e) == -1 && strstr(e.msg, "token 4 is negative"));
    const uint64_t bad_docs[4] = {0, 5, 3, 9};
    CHECK(td_write(p, TOK, MASK, 9, bad_docs, 3, &e) == -1 && strstr(e.msg, "document 1 is empty or offsets decrease"));
    const uint64_t short_docs[4] = {0, 3, 5, 8};
    CHECK(td_write(p, TOK, MASK, 9, short_docs, 3, &e) == -1 && strstr(e.msg, "from 0 to the token count"));
    uint8_t bad_mask[9] = {0, 1, 2};
    CHECK(td_write(p, TOK, bad_mask, 9, DOCS, 3, &e) == -1 && strstr(e.msg, "not 0 or 1"));
    CHECK(access(p, F_OK) != 0);
}

static void test_malformed(void)
{
    char p[256];
    unsigned char buf[512];
    size_t n;

    tpath(p, sizeof p, "missing.tok");
    expect_fail(p, "cannot open");

    tpath(p, sizeof p, "empty.tok");
    write_bytes(p, "", 0);
    expect_fail(p, "empty file (0 bytes)");

    tpath(p, sizeof p, "short.tok");
    n = raw_image(buf, 1, 34, TOK, MASK, 9, DOCS, 3);
    write_bytes(p, buf, 20);
    expect_fail(p, "file is 20 bytes, shorter than the 40-byte token data header (truncated?)");

    tpath(p, sizeof p, "magic.tok");
    memcpy(buf, "FTCTOKX", 8);
    write_bytes(p, buf, n);
    expect_fail(p, "bad magic");

    tpath(p, sizeof p, "version.tok");
    n = raw_image(buf, 7, 34, TOK, MASK, 9, DOCS, 3);
    write_bytes(p, buf, n);
    expect_fail(p, "unsupported format version 7");

    tpath(p, sizeof p, "checksum.tok");
    n = raw_image(buf, 1, 34, TOK, MASK, 9, DOCS, 3);
    buf[44] ^= 1; /* token 1 */
    write_bytes(p, buf, n);
    expect_fail(p, "checksum mismatch");

    tpath(p, sizeof p, "trunc.tok");
    n = raw_image(buf, 1, 34, TOK, MASK, 9, DOCS, 3);
    write_bytes(p, buf, n - 8);
    expect_fail(p, "file is 112 bytes but its header promises 120 (truncated?)");

    tpath(p, sizeof p, "trailing.tok");
    buf[n] = 0;
    write_bytes(p, buf, n + 1);
    expect_fail(p, "trailing data");

    tpath(p, sizeof p, "zero.tok");
    const uint64_t zero_docs[1] = {0};
    n = raw_image(buf, 1, 0, TOK, MASK, 0, zero_docs, 0);
    write_bytes(p, buf, n);
    expect_fail(p, "holds zero tokens");

    tpath(p, sizeof p, "nodocs.tok");
    const uint64_t nine[1] = {9};
    n = raw_image(buf, 1, 34, TOK, MASK, 9, nine, 0);
    write_bytes(p, buf, n);
    expect_fail(p, "zero documents");

    tpath(p, sizeof p, "docs.tok");
    const uint64_t bad_docs[4] = {0, 5, 5, 9};
    n = raw_image(buf, 1, 34, TOK, MASK, 9, bad_docs, 3);
    write_bytes(p, buf, n);
    expect_fail(p, "document offsets are not strictly increasing at document 1");

    tpath(p, sizeof p, "docend.tok");
    const uint64_t end_docs[4] = {0, 3, 5, 8};
    n = raw_image(buf, 1, 34, TOK, MASK, 9, end_docs, 3);
    write_bytes(p, buf, n);
    expect_fail(p, "last document ends at 8");

    tpath(p, sizeof p, "negtok.tok");
    int32_t neg[9];
    memcpy(neg, TOK, sizeof neg);
    neg[2] = -5;
    n = raw_image(buf, 1, 34, neg, MASK, 9, DOCS, 3);
    write_bytes(p, buf, n);
    expect_fail(p, "token 2 is negative (-5)");

    tpath(p, sizeof p, "vocab.tok");
    n = raw_image(buf, 1, 33, TOK, MASK, 9, DOCS, 3);
    write_bytes(p, buf, n);
    expect_fail(p, "token 8 is 33, not below vocab_needed 33");

    tpath(p, sizeof p, "absurd.tok");
    n = raw_image(buf, 1, 34, TOK, MASK, 9, DOCS, 3);
    uint64_t huge = UINT64_MAX / 2;
    memcpy(buf + 16, &huge, 8);
    write_bytes(p, buf, n);
    expect_fail(p, "header counts are absurd");
}

static void check_row(const int32_t *got, const int32_t *want, int n, const char *what, int row)
{
    int same = memcmp(got, want, (size_t)n * sizeof *got) == 0;
    CHECK_MSG(same, "row %d %s differs", row, what);
    if (same)
        return;
    for (int i = 0; i < n; i++)
        fprintf(stderr, "  [%d] got %d want %d\n", i, got[i], want[i]);
}

static void test_batching(void)
{
    char p[256];
    tpath(p, sizeof p, "batch.tok");
    ft_err_t e = {{0}};
    CHECK(td_write(p, TOK, MASK, 9, DOCS, 3, &e) == 0);
    td_file_t f;
    CHECK_MSG(td_open(&f, p, &e) == 0, "%s", e.msg);
    int32_t tok[8], tgt[8], pos[8], doc[8];

    /* packing on, S = 4: (9-1)/4 = 2 rows. Row 0 reads stream 0..4, row 1 stream 4..8. */
    CHECK(td_nrows(&f, 4, 1, &e) == 2);
    static const int32_t r0_tok[4] = {10, 11, 12, 20}, r0_tgt[4] = {11, 12, TD_IGNORE, 21},
                         r0_pos[4] = {0, 1, 2, 0}, r0_doc[4] = {0, 0, 0, 1};
    static const int32_t r1_tok[4] = {21, 30, 31, 32}, r1_tgt[4] = {TD_IGNORE, 31, TD_IGNORE, 33},
                         r1_pos[4] = {1, 0, 1, 2}, r1_doc[4] = {1, 2, 2, 2};
    CHECK_MSG(td_batch(&f, 4, 1, 0, tok, tgt, pos, doc, &e) == 0, "%s", e.msg);
    check_row(tok, r0_tok, 4, "tokens", 0);
    check_row(tgt, r0_tgt, 4, "targets", 0);
    check_row(pos, r0_pos, 4, "pos", 0);
    check_row(doc, r0_doc, 4, "doc", 0);
    CHECK(td_count_targets(tgt, 4) == 3);
    CHECK_MSG(td_batch(&f, 4, 1, 1, tok, tgt, pos, doc, &e) == 0, "%s", e.msg);
    check_row(tok, r1_tok, 4, "tokens", 1);
    check_row(tgt, r1_tgt, 4, "targets", 1);
    check_row(pos, r1_pos, 4, "pos", 1);
    check_row(doc, r1_doc, 4, "doc", 1);
    CHECK(td_count_targets(tgt, 4) == 2);
    CHECK(td_batch(&f, 4, 1, 2, tok, tgt, pos, doc, &e) == -1 && strstr(e.msg, "row 2 is out of range"));

    /* S = 8 gives exactly one row; S = 9 needs 10 tokens */
    CHECK(td_nrows(&f, 8, 1, &e) == 1);
    CHECK(td_batch(&f, 8, 1, 0, tok, tgt, pos, doc, &e) == 0 && tgt[7] == 33 && pos[7] == 2);
    CHECK(td_nrows(&f, 9, 1, &e) == -1 && strstr(e.msg, "data file has 9 tokens, fewer than seq_len+1"));
    CHECK(td_nrows(&f, 0, 1, &e) == -1 && strstr(e.msg, "seq_len 0 is out of range"));

    /* packing off, S = 3: one row per document, truncated to S+1 = 4 tokens, padded. */
    CHECK(td_nrows(&f, 3, 0, &e) == 3);
    static const int32_t d0_tok[3] = {10, 11, 12}, d0_tgt[3] = {11, 12, TD_IGNORE}, d0_pos[3] = {0, 1, 2},
                         d0_doc[3] = {0, 0, 0};
    static const int32_t d1_tok[3] = {20, 21, 0}, d1_tgt[3] = {21, TD_IGNORE, TD_IGNORE}, d1_pos[3] = {0, 1, 2},
                         d1_doc[3] = {1, 1, -1};
    static const int32_t d2_tok[3] = {30, 31, 32}, d2_tgt[3] = {31, TD_IGNORE, 33}, d2_pos[3] = {0, 1, 2},
                         d2_doc[3] = {2, 2, 2};
    const int32_t *want[3][4] = {{d0_tok, d0_tgt, d0_pos, d0_doc},
                                 {d1_tok, d1_tgt, d1_pos, d1_doc},
                                 {d2_tok, d2_tgt, d2_pos, d2_doc}};
    for (int r = 0; r < 3; r++) {
        CHECK_MSG(td_batch(&f, 3, 0, r, tok, tgt, pos, doc, &e) == 0, "%s", e.msg);
        check_row(tok, want[r][0], 3, "tokens (no packing)", r);
        check_row(tgt, want[r][1], 3, "targets (no packing)", r);
        check_row(pos, want[r][2], 3, "pos (no packing)", r);
        check_row(doc, want[r][3], 3, "doc (no packing)", r);
    }
    /* packing off with S larger than every document: padding continues positions */
    CHECK(td_batch(&f, 6, 0, 1, tok, tgt, pos, doc, &e) == 0);
    static const int32_t p_tok[6] = {20, 21, 0, 0, 0, 0}, p_pos[6] = {0, 1, 2, 3, 4, 5},
                         p_doc[6] = {1, 1, -1, -1, -1, -1};
    check_row(tok, p_tok, 6, "tokens (padded)", 1);
    check_row(pos, p_pos, 6, "pos (padded)", 1);
    check_row(doc, p_doc, 6, "doc (padded)", 1);
    CHECK(td_count_targets(tgt, 6) == 1);
    CHECK(td_batch(&f, 3, 0, 3, tok, tgt, pos, doc, &e) == -1 && strstr(e.msg, "out of range"));
    td_close(&f);
}

static int is_perm(const int64_t *v, int64_t n)
{
    char seen[1000] = {0};
    for (int64_t i = 0; i < n; i++) {
        if (v[i] < 0 || v[i] >= n || seen[v[i]])
            return 0;
        seen[v[i]] = 1;
    }
    return 1;
}

static void test_order(void)
{
    enum { N = 37 };
    td_order_t o, o2;
    td_order_init(&o);
    td_order_init(&o2);
    int64_t e0[N], e1[N], again[N], other[N];
    for (int k = 0; k < N; k++) {
        e0[k] = td_row_for(&o, N, 1234, k);
        e1[k] = td_row_for(&o, N, 1234, N + k);
    }
    CHECK(is_perm(e0, N) && is_perm(e1, N));
    CHECK(memcmp(e0, e1, sizeof e0) != 0); /* epochs differ */
    int identity = 1;
    for (int k = 0; k < N; k++)
        identity &= e0[k] == k;
    CHECK(!identity);
    /* deterministic: a fresh order, visited out of sequence, gives the same rows */
    for (int k = N - 1; k >= 0; k--)
        again[k] = td_row_for(&o2, N, 1234, k);
    CHECK(memcmp(e0, again, sizeof e0) == 0);
    CHECK(td_row_for(&o2, N, 1234, 5 * N + 3) == td_row_for(&o, N, 1234, 5 * N + 3));
    for (int k = 0; k < N; k++)
        other[k] = td_row_for(&o2, N, 99, k);
    CHECK(is_perm(other, N) && memcmp(e0, other, sizeof e0) != 0);
    /* a fixed expectation guards against silent changes to the generator (resume safety) */
    uint64_t s = 0;
    CHECK(td_splitmix64(&s) == 0xe220a8397b1dcdafull);
    CHECK(td_row_for(&o, 1, 7, 12345) == 0);
    CHECK(td_row_for(&o, 0, 7, 0) == -1 && td_row_for(&o, 5, 7, -1) == -1);
    /* bigger: still a permutation */
    int64_t big[1000];
    for (int k = 0; k < 1000; k++)
        big[k] = td_row_for(&o, 1000, 42, 3000 + k);
    CHECK(is_perm(big, 1000));
    td_order_free(&o);
    td_order_free(&o2);
}

/* ---- ftdata, when built ---- */

static int run_ftdata(const char *bin, const char *args)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' %s >'%s/ftdata.log' 2>&1", bin, args, tmpdir);
    return system(cmd);
}

static int log_has(const char *phrase)
{
    char p[256], *text = NULL;
    ft_err_t e;
    tpath(p, sizeof p, "ftdata.log");
    if (ft_read_file(p, &text, NULL, &e) != 0)
        return 0;
    int found = strstr(text, phrase) != NULL;
    if (!found)
        fprintf(stderr, "ftdata log lacks '%s':\n%s\n", phrase, text);
    free(text);
    return found;
}

static void test_ftdata_text(const char *bin)
{
    char in[256], out[256], args[1024];
    tpath(in, sizeof in, "in.txt");
    tpath(out, sizeof out, "out.tok");
    const char *text = "ab\ncd\n\n\n  \nef\r\n\r\n";
    write_bytes(in, text, strlen(text));
    snprintf(args, sizeof args, "'%s' -o '%s'", in, out);
    CHECK(run_ftdata(bin, args) == 0);
    CHECK(log_has("2 docs, 11 tokens, 9 targets"));
    td_file_t f;
    ft_err_t e = {{0}};
    CHECK_MSG(td_open(&f, out, &e) == 0, "%s", e.msg);
    static const int32_t want[11] = {256, 'a', 'b', '\n', 'c', 'd', 257, 256, 'e', 'f', 257};
    static const uint8_t mask[11] = {0, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1};
    CHECK(f.ntokens == 11 && f.ndocs == 2 && f.vocab_needed == 258);
    CHECK(f.ntokens == 11 && memcmp(f.tokens, want, sizeof want) == 0 && memcmp(f.mask, mask, 11) == 0);
    CHECK(f.ndocs == 2 && f.doc_start[1] == 7);
    td_close(&f);

    write_bytes(in, "\n\n \n", 4);
    CHECK(run_ftdata(bin, args) != 0);
    CHECK(log_has("no documents"));
}

static void test_ftdata_jsonl(const char *bin)
{
    char in[256], out[256], args[1024];
    tpath(in, sizeof in, "in.jsonl");
    tpath(out, sizeof out, "out2.tok");
    const char *text = "{\"text\": \"hi\"}\n\n{\"prompt\": \"Q\", \"completion\": \"A!\"}\n";
    write_bytes(in, text, strlen(text));
    snprintf(args, sizeof args, "'%s' -o '%s'", in, out);
    CHECK(run_ftdata(bin, args) == 0);
    td_file_t f;
    ft_err_t e = {{0}};
    CHECK_MSG(td_open(&f, out, &e) == 0, "%s", e.msg);
    static const int32_t want[9] = {256, 'h', 'i', 257, 256, 'Q', 'A', '!', 257};
    static const uint8_t mask[9] = {0, 1, 1, 1, 0, 0, 1, 1, 1};
    CHECK(f.ntokens == 9 && memcmp(f.tokens, want, sizeof want) == 0 && memcmp(f.mask, mask, 9) == 0);
    td_close(&f);

    /* a bad line: file:line message, non-zero exit, nothing written */
    char out3[256];
    tpath(out3, sizeof out3, "out3.tok");
    const char *bad = "{\"text\": \"ok\"}\n{\"prompt\": \"no completion\"}\n";
    write_bytes(in, bad, strlen(bad));
    snprintf(args, sizeof args, "'%s' -o '%s'", in, out3);
    CHECK(run_ftdata(bin, args) != 0);
    char where[300];
    snprintf(where, sizeof where, "%s:2:", in);
    CHECK(log_has(where));
    CHECK(access(out3, F_OK) != 0);
    write_bytes(in, "{\"text\": \"ok\"}\nnot json\n", 24);
    CHECK(run_ftdata(bin, args) != 0);
    CHECK(log_has("not valid JSON"));
    CHECK(access(out3, F_OK) != 0);

    /* --format overrides the extension; --help works */
    snprintf(args, sizeof args, "'%s' --format text -o '%s'", in, out3);
    CHECK(run_ftdata(bin, args) == 0);
    CHECK(run_ftdata(bin, "--help") == 0 && log_has("Usage"));
    CHECK(run_ftdata(bin, "") != 0);
}

static void test_ftdata(void)
{
    const char *dir = getenv("FTC_BIN");
    char bin[1024];
    snprintf(bin, sizeof bin, "%s/ftdata", dir ? dir : "");
    if (!dir || access(bin, X_OK) != 0) {
        printf("ftdata not found ($FTC_BIN unset or not built): skipping its checks\n");
        return;
    }
    test_ftdata_text(bin);
    test_ftdata_jsonl(bin);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ftc_td_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 2;
    }
    test_round_trip();
    test_writer_errors();
    test_malformed();
    test_batching();
    test_order();
    test_ftdata();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return CHECK_DONE();
}
