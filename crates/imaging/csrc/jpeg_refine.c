/*
 * Progressive JPEG's AC refinement scans, decoded faster than libjpeg-turbo's own
 * decode_mcu_AC_refine (jdphuff.c), with the same results bit for bit.
 *
 * Derived from libjpeg-turbo's jdphuff.c (Copyright (C) 1995-1997, Thomas G. Lane; modified
 * 2015-2016, 2018-2022, D. R. Commander). This software is based in part on the work of the
 * Independent JPEG Group. libjpeg-turbo is distributed under the IJG and BSD-style licences.
 *
 * Why: in a refinement scan each already-nonzero coefficient gets one correction bit. The
 * original walks every coefficient of the band for each 8x8 block (up to 63), checks each for
 * zero through the zigzag table, and reads each bit with a refill check and two branches on the
 * data. Here a block's nonzero coefficients are found once as a 64-bit mask (SSE2 compares),
 * the bits for a run of them are taken from the bit buffer in one read, and the walk visits only
 * the coefficients that get a bit. On photos that decoder was 21.6 % of our CPU
 * (docs/benchmarks.md).
 *
 * How it is installed: resizer_jpeg_fast_refine() sets a progress monitor. libjpeg calls it
 * before it absorbs each scan of a progressive file, by then its progressive entropy decoder
 * exists; the monitor wraps that decoder's start_pass, which chooses the decode routine for
 * each scan, and picks ours for AC refinement scans. The decoder's private state is declared
 * below as jdphuff.c declares it: imaging's build.rs compiles this file only when the vendored
 * jdphuff.c has exactly these declarations.
 */

#define JPEG_INTERNALS
#include "jinclude.h"
#include "jpeglib.h"
#include "jdhuff.h"
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* jdphuff.c's private state, as it declares it (see above). */
typedef struct {
  unsigned int EOBRUN;
  int last_dc_val[MAX_COMPS_IN_SCAN];
} savable_state;

typedef struct {
  struct jpeg_entropy_decoder pub;
  bitread_perm_state bitstate;
  savable_state saved;
  unsigned int restarts_to_go;
  d_derived_tbl *derived_tbls[NUM_HUFF_TBLS];
  d_derived_tbl *ac_derived_tbl;
} phuff_entropy_decoder;

typedef phuff_entropy_decoder *phuff_entropy_ptr;

/* Our progress monitor, and the start_pass it wraps. Allocated in the decompressor's permanent
 * pool, so it lives exactly as long as the decompressor. */
typedef struct {
  struct jpeg_progress_mgr pub;
  void (*original_start_pass) (j_decompress_ptr cinfo);
  struct jpeg_entropy_decoder *wrapped;
  int refine_scans;               /* scans given to decode_mcu_AC_refine_fast */
} refine_hook;

/* The zigzag index of each natural-order position: the inverse of jpeg_natural_order. */
static const unsigned char zigzag_of_natural[DCTSIZE2] = {
   0,  1,  5,  6, 14, 15, 27, 28,
   2,  4,  7, 13, 16, 26, 29, 42,
   3,  8, 12, 17, 25, 30, 41, 43,
   9, 11, 18, 24, 31, 40, 44, 53,
  10, 19, 23, 32, 39, 45, 52, 54,
  20, 22, 33, 38, 46, 51, 55, 60,
  21, 34, 37, 47, 50, 56, 59, 61,
  35, 36, 48, 49, 57, 58, 62, 63
};

/* Bit z set when the coefficient at zigzag index z is nonzero. */
static INLINE uint64_t nonzero_zigzag(const JCOEF *block)
{
  uint64_t natural = 0, zigzag = 0;
#if defined(__SSE2__)
  const __m128i zero = _mm_setzero_si128();
  int i;
  for (i = 0; i < DCTSIZE2; i += 16) {
    __m128i lo = _mm_loadu_si128((const __m128i *)(block + i));
    __m128i hi = _mm_loadu_si128((const __m128i *)(block + i + 8));
    __m128i is_zero = _mm_packs_epi16(_mm_cmpeq_epi16(lo, zero), _mm_cmpeq_epi16(hi, zero));
    natural |= (uint64_t)(~_mm_movemask_epi8(is_zero) & 0xFFFF) << i;
  }
#else
  int i;
  for (i = 0; i < DCTSIZE2; i++)
    natural |= (uint64_t)(block[i] != 0) << i;
#endif
  while (natural) {
    zigzag |= (uint64_t)1 << zigzag_of_natural[__builtin_ctzll(natural)];
    natural &= natural - 1;
  }
  return zigzag;
}

/* Bits from..to (inclusive) set; empty when from > to. to <= 63. */
static INLINE uint64_t band(int from, int to)
{
  if (from > to)
    return 0;
  return (~(uint64_t)0 >> (63 - to)) & (~(uint64_t)0 << from);
}

#define NEG_1  ((unsigned)-1)

/* One correction bit to each coefficient of `nonzero` (zigzag mask), in zigzag order, as
 * the original does one at a time: a 1 bit raises the magnitude by p1 unless that bit is
 * already set (from a pass before a suspension). Fails like CHECK_BIT_BUFFER. */
#define CORRECT(nonzero, failaction) { \
  uint64_t left_ = (nonzero); \
  while (left_) { \
    int n_ = __builtin_popcountll(left_); \
    int take_ = n_ < 24 ? n_ : 24; \
    unsigned int bits_; \
    CHECK_BIT_BUFFER(br_state, take_, failaction); \
    bits_ = (unsigned int)(get_buffer >> (bits_left -= take_)) & ((1u << take_) - 1); \
    while (take_-- > 0) { \
      JCOEF *coef_ = *block + jpeg_natural_order[__builtin_ctzll(left_)]; \
      int value_ = *coef_; \
      int sign_ = value_ >> 31; /* 0 or -1 */ \
      /* Without branches: the bits are as good as random. m1 is -p1. */ \
      int raise_ = (int)((bits_ >> take_) & 1) & ((value_ & p1) == 0); \
      *coef_ = (JCOEF)(value_ + (((p1 ^ sign_) - sign_) & -raise_)); \
      left_ &= left_ - 1; \
    } \
  } \
}

/* As jdphuff.c's process_restart. */
LOCAL(boolean)
process_restart(j_decompress_ptr cinfo)
{
  phuff_entropy_ptr entropy = (phuff_entropy_ptr)cinfo->entropy;
  int ci;

  cinfo->marker->discarded_bytes += entropy->bitstate.bits_left / 8;
  entropy->bitstate.bits_left = 0;
  if (!(*cinfo->marker->read_restart_marker) (cinfo))
    return FALSE;
  for (ci = 0; ci < cinfo->comps_in_scan; ci++)
    entropy->saved.last_dc_val[ci] = 0;
  entropy->saved.EOBRUN = 0;
  entropy->restarts_to_go = cinfo->restart_interval;
  if (cinfo->unread_marker == 0)
    entropy->pub.insufficient_data = FALSE;
  return TRUE;
}

/* jdphuff.c's decode_mcu_AC_refine, with the walks over the band replaced by masks. */
METHODDEF(boolean)
decode_mcu_AC_refine_fast(j_decompress_ptr cinfo, JBLOCKROW *MCU_data)
{
  phuff_entropy_ptr entropy = (phuff_entropy_ptr)cinfo->entropy;
  int Se = cinfo->Se;
  int p1 = 1 << cinfo->Al;          /* 1 in the bit position being coded */
  int m1 = (NEG_1) << cinfo->Al;    /* -1 in the bit position being coded */
  register int s, k, r;
  unsigned int EOBRUN;
  JBLOCKROW block;
  BITREAD_STATE_VARS;
  d_derived_tbl *tbl;
  int num_newnz;
  int newnz_pos[DCTSIZE2];
  uint64_t nonzero;

  if (cinfo->restart_interval) {
    if (entropy->restarts_to_go == 0)
      if (!process_restart(cinfo))
        return FALSE;
  }

  if (!entropy->pub.insufficient_data) {
    BITREAD_LOAD_STATE(cinfo, entropy->bitstate);
    EOBRUN = entropy->saved.EOBRUN;
    block = MCU_data[0];
    tbl = entropy->ac_derived_tbl;
    num_newnz = 0;
    k = cinfo->Ss;
    /* Positions at or after k are only read below, and a coefficient made nonzero is placed at
     * the position the walk has just reached, so the mask stays true for what is ahead. */
    nonzero = nonzero_zigzag(*block);

    if (EOBRUN == 0) {
      for (; k <= Se; k++) {
        uint64_t zeros, passed;
        int target;
        HUFF_DECODE(s, br_state, tbl, goto undoit, label3);
        r = s >> 4;
        s &= 15;
        if (s) {
          if (s != 1)
            WARNMS(cinfo, JWRN_HUFF_BAD_CODE);
          CHECK_BIT_BUFFER(br_state, 1, goto undoit);
          if (GET_BITS(1))
            s = p1;
          else
            s = m1;
        } else {
          if (r != 15) {
            EOBRUN = 1 << r;
            if (r) {
              CHECK_BIT_BUFFER(br_state, r, goto undoit);
              r = GET_BITS(r);
              EOBRUN += r;
            }
            break;
          }
        }
        /* Pass the already-nonzero coefficients and r zero ones from k: the walk stops on the
         * (r+1)th zero, or past Se when the band has fewer. */
        zeros = ~nonzero & band(k, Se);
        while (r-- > 0 && zeros)
          zeros &= zeros - 1;
        target = zeros ? __builtin_ctzll(zeros) : Se + 1;
        passed = nonzero & band(k, target - 1);
        CORRECT(passed, goto undoit);
        k = target;
        if (s) {
          int pos = jpeg_natural_order[k];
          (*block)[pos] = (JCOEF)s;
          newnz_pos[num_newnz++] = pos;
        }
      }
    }

    if (EOBRUN > 0) {
      /* The rest of the band: a correction bit to each already-nonzero coefficient. */
      if (k <= Se)
        CORRECT(nonzero & band(k, Se), goto undoit);
      EOBRUN--;
    }

    BITREAD_SAVE_STATE(cinfo, entropy->bitstate);
    entropy->saved.EOBRUN = EOBRUN;
  }

  if (cinfo->restart_interval)
    entropy->restarts_to_go--;

  return TRUE;

undoit:
  while (num_newnz > 0)
    (*block)[newnz_pos[--num_newnz]] = 0;

  return FALSE;
}

/* The wrapped start_pass: libjpeg's, then ours for an AC refinement scan (what jdphuff.c's
 * start_pass chose decode_mcu_AC_refine for: Ah != 0 and not the DC band). */
METHODDEF(void)
start_pass_hooked(j_decompress_ptr cinfo)
{
  refine_hook *hook = (refine_hook *)cinfo->progress;

  (*hook->original_start_pass) (cinfo);
  if (cinfo->Ah != 0 && cinfo->Ss != 0) {
    cinfo->entropy->decode_mcu = decode_mcu_AC_refine_fast;
    hook->refine_scans++;
  }
}

METHODDEF(void)
progress_monitor(j_common_ptr common)
{
  j_decompress_ptr cinfo = (j_decompress_ptr)common;
  refine_hook *hook = (refine_hook *)cinfo->progress;

  /* Only libjpeg's progressive Huffman decoder has the state declared above: an arithmetic-coded
   * file's decoder (jdarith.c, not built into this libjpeg, which refuses such files first) must
   * never be wrapped. */
  if (hook->wrapped == NULL && cinfo->progressive_mode && !cinfo->arith_code &&
      cinfo->entropy != NULL && cinfo->entropy->start_pass != start_pass_hooked) {
    hook->original_start_pass = cinfo->entropy->start_pass;
    cinfo->entropy->start_pass = start_pass_hooked;
    hook->wrapped = cinfo->entropy;
  }
}

/* Installs the faster refinement decoder on a created decompressor, before
 * jpeg_start_decompress. Returns 1. */
int resizer_jpeg_fast_refine(j_decompress_ptr cinfo)
{
  refine_hook *hook = (refine_hook *)(*cinfo->mem->alloc_small)
    ((j_common_ptr)cinfo, JPOOL_PERMANENT, sizeof(refine_hook));

  memset(hook, 0, sizeof(refine_hook));
  hook->pub.progress_monitor = progress_monitor;
  cinfo->progress = &hook->pub;
  return 1;
}

/* How many scans the faster decoder was given, on a decompressor it was installed on. */
int resizer_jpeg_refine_scans(j_decompress_ptr cinfo)
{
  return ((refine_hook *)cinfo->progress)->refine_scans;
}
