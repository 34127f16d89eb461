// AES-128 in counter mode as an XLA FFI handler on CPU: the fast path of jaxmpc.prg.
//
// Key stream for a 16-byte key k: AES_k(0) || AES_k(1) || ..., block j being
// the 128-bit little-endian integer j (FIPS-197 AES, SP 800-38A CTR). The
// output buffer, whatever its dtype, is filled with the first bytes of that
// stream; jaxmpc.prg.reference_bits computes the same bytes in jax.numpy.
// AES-NI, and VAES (four blocks per 512-bit register) where the CPU has it.
#include <cstdint>
#include <cstring>
#include <immintrin.h>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

template <int rcon>
__attribute__((target("aes,sse4.1"))) inline __m128i ExpandStep(__m128i k) {
  __m128i t = _mm_shuffle_epi32(_mm_aeskeygenassist_si128(k, rcon), 0xff);
  k = _mm_xor_si128(k, _mm_slli_si128(k, 4));
  k = _mm_xor_si128(k, _mm_slli_si128(k, 4));
  k = _mm_xor_si128(k, _mm_slli_si128(k, 4));
  return _mm_xor_si128(k, t);
}

__attribute__((target("aes,sse4.1"))) void ExpandKey(const uint32_t key[4], __m128i rk[11]) {
  rk[0] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(key));
  rk[1] = ExpandStep<0x01>(rk[0]);
  rk[2] = ExpandStep<0x02>(rk[1]);
  rk[3] = ExpandStep<0x04>(rk[2]);
  rk[4] = ExpandStep<0x08>(rk[3]);
  rk[5] = ExpandStep<0x10>(rk[4]);
  rk[6] = ExpandStep<0x20>(rk[5]);
  rk[7] = ExpandStep<0x40>(rk[6]);
  rk[8] = ExpandStep<0x80>(rk[7]);
  rk[9] = ExpandStep<0x1b>(rk[8]);
  rk[10] = ExpandStep<0x36>(rk[9]);
}

// Blocks [first, first + n) of the key stream: block j = AES_k(j as a 128-bit little-endian integer).
__attribute__((target("aes,sse4.1"))) void CtrAesNi(const __m128i rk[11], uint64_t first, uint64_t n, uint8_t* out) {
  constexpr int kLanes = 8;
  uint64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    __m128i b[kLanes];
    for (int l = 0; l < kLanes; ++l) b[l] = _mm_xor_si128(_mm_set_epi64x(0, first + j + l), rk[0]);
    for (int r = 1; r < 10; ++r)
      for (int l = 0; l < kLanes; ++l) b[l] = _mm_aesenc_si128(b[l], rk[r]);
    for (int l = 0; l < kLanes; ++l)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16 * (j + l)), _mm_aesenclast_si128(b[l], rk[10]));
  }
  for (; j < n; ++j) {
    __m128i b = _mm_xor_si128(_mm_set_epi64x(0, first + j), rk[0]);
    for (int r = 1; r < 10; ++r) b = _mm_aesenc_si128(b, rk[r]);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16 * j), _mm_aesenclast_si128(b, rk[10]));
  }
}

// The same with VAES: four blocks per 512-bit register, eight registers in flight.
__attribute__((target("aes,sse4.1,avx512f,vaes"))) void CtrVaes(const __m128i rk[11], uint64_t n, uint8_t* out) {
  constexpr int kRegs = 8;
  __m512i k[11];
  for (int r = 0; r < 11; ++r) k[r] = _mm512_broadcast_i32x4(rk[r]);
  const __m512i step = _mm512_set_epi64(0, 4, 0, 4, 0, 4, 0, 4);
  __m512i ctr = _mm512_set_epi64(0, 3, 0, 2, 0, 1, 0, 0);
  uint64_t j = 0;
  for (; j + 4 * kRegs <= n; j += 4 * kRegs) {
    __m512i b[kRegs];
    for (int l = 0; l < kRegs; ++l) {
      b[l] = _mm512_xor_si512(ctr, k[0]);
      ctr = _mm512_add_epi64(ctr, step);
    }
    for (int r = 1; r < 10; ++r)
      for (int l = 0; l < kRegs; ++l) b[l] = _mm512_aesenc_epi128(b[l], k[r]);
    for (int l = 0; l < kRegs; ++l)
      _mm512_storeu_si512(out + 16 * (j + 4 * l), _mm512_aesenclast_epi128(b[l], k[10]));
  }
  CtrAesNi(rk, j, n - j, out + 16 * j);
}

bool HasVaes() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("vaes");
  return has;
}

}  // namespace

extern "C" int jaxmpc_aes_supported() { return __builtin_cpu_supports("aes") && __builtin_cpu_supports("sse4.1"); }

// keys: uint32[..., 4], one AES-128 key per batch entry (little-endian bytes).
// out: any dtype, [..., shape]; each batch entry's bytes are the first bytes of its key stream.
static ffi::Error Aes128Ctr(ffi::Buffer<ffi::U32> keys, ffi::Result<ffi::AnyBuffer> out) {
  const size_t batch = keys.element_count() / 4;
  if (batch == 0 || keys.element_count() % 4 != 0) return ffi::Error::InvalidArgument("keys must be uint32[..., 4]");
  const size_t total = out->size_bytes();
  if (total % batch != 0) return ffi::Error::InvalidArgument("output does not split evenly over the keys");
  const size_t bytes = total / batch, full = bytes / 16, tail = bytes % 16;
  const uint32_t* key = keys.typed_data();
  uint8_t* dst = static_cast<uint8_t*>(out->untyped_data());
  for (size_t i = 0; i < batch; ++i, key += 4, dst += bytes) {
    alignas(16) __m128i rk[11];
    ExpandKey(key, rk);
    if (HasVaes()) CtrVaes(rk, full, dst);
    else CtrAesNi(rk, 0, full, dst);
    if (tail) {
      alignas(16) uint8_t last[16];
      CtrAesNi(rk, full, 1, last);
      std::memcpy(dst + 16 * full, last, tail);
    }
  }
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxmpc_aes128_ctr, Aes128Ctr,
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::U32>>().Ret<ffi::AnyBuffer>());
