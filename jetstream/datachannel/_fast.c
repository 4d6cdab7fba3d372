/* jetstream.datachannel._fast: the compiled per-packet path of the data channel.
 *
 * The sans-IO core in Python (wire.py, crypto.py, rangeset.py, udpio.py) is the reference;
 * this module does the same work per packet without the interpreter: AES-GCM seal/open
 * through OpenSSL's EVP API (one context per key, only the nonce changes per packet), runs
 * of full DATA packets sealed in one call, ACK frame encode/decode, integer range sets, and
 * batched socket I/O (sendmmsg with UDP GSO, recvmmsg with UDP GRO). Every function here
 * has a pure-Python twin that the tests compare it with (tests/datachannel/test_fast.py).
 *
 * Work that touches no Python object (crypto of a run, the syscalls) runs without the GIL,
 * so several flows in threads of one process use several cores.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif
#ifndef SOL_UDP
#define SOL_UDP 17
#endif

#define NONCE_LEN 12
#define TAG_LEN 16
#define SHORT_HEADER_LEN 13
#define CID_LEN 8
#define DATA_HEADER_LEN 15
#define FRAME_ACK 0x02
#define FRAME_DATA 0x08
#define ACK_BASE_LEN 19 /* type, largest (8), delay (4), count (2), first (4) */
#define MAX_GSO_SEGMENTS 64
#define MAX_GSO_BYTES 65000
#define RECV_SLOT_BYTES 65535
#define MAX_STREAM_OFFSET ((((uint64_t)1) << 62) - 1)

static PyObject *malformed_error; /* set by the Python side: wire.malformed's class */

static inline void put_u16(uint8_t *p, uint32_t v) { p[0] = v >> 8; p[1] = v; }
static inline void put_u32(uint8_t *p, uint32_t v) {
    p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}
static inline void put_u64(uint8_t *p, uint64_t v) {
    put_u32(p, (uint32_t)(v >> 32)); put_u32(p + 4, (uint32_t)v);
}
static inline uint32_t get_u16(const uint8_t *p) { return ((uint32_t)p[0] << 8) | p[1]; }
static inline uint32_t get_u32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint64_t get_u64(const uint8_t *p) {
    return ((uint64_t)get_u32(p) << 32) | get_u32(p + 4);
}

/* ---------------------------------------------------------------------------------------- */
/* Aead: one key and IV (one direction, one key phase)                                      */
/* ---------------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    EVP_CIPHER_CTX *enc;
    EVP_CIPHER_CTX *dec;
    uint8_t iv[NONCE_LEN];
} AeadObject;

static void make_nonce(const AeadObject *self, uint64_t pn, uint8_t *nonce) {
    memcpy(nonce, self->iv, NONCE_LEN);
    for (int i = 0; i < 8; i++) nonce[NONCE_LEN - 1 - i] ^= (uint8_t)(pn >> (8 * i));
}

static int Aead_init(AeadObject *self, PyObject *args, PyObject *kwds) {
    Py_buffer key, iv;
    static char *kwlist[] = {"key", "iv", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*y*", kwlist, &key, &iv)) return -1;
    const EVP_CIPHER *cipher = key.len == 16 ? EVP_aes_128_gcm()
                             : key.len == 32 ? EVP_aes_256_gcm() : NULL;
    int ok = cipher != NULL && iv.len == NONCE_LEN;
    if (ok) {
        memcpy(self->iv, iv.buf, NONCE_LEN);
        self->enc = EVP_CIPHER_CTX_new();
        self->dec = EVP_CIPHER_CTX_new();
        ok = self->enc && self->dec
             && EVP_EncryptInit_ex(self->enc, cipher, NULL, key.buf, NULL) == 1
             && EVP_DecryptInit_ex(self->dec, cipher, NULL, key.buf, NULL) == 1;
    }
    PyBuffer_Release(&key);
    PyBuffer_Release(&iv);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "Aead: a 16- or 32-byte key and a 12-byte IV");
        return -1;
    }
    return 0;
}

static void Aead_dealloc(AeadObject *self) {
    if (self->enc) EVP_CIPHER_CTX_free(self->enc);
    if (self->dec) EVP_CIPHER_CTX_free(self->dec);
    OPENSSL_cleanse(self->iv, NONCE_LEN);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Seal: out = ciphertext || tag of the concatenation of `parts` (AAD `aad`). */
static int seal_into(EVP_CIPHER_CTX *ctx, const uint8_t *nonce, const uint8_t *aad,
                     size_t aad_len, const uint8_t *const *parts, const size_t *lens,
                     int nparts, uint8_t *out) {
    int n;
    if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1) return -1;
    if (aad_len && EVP_EncryptUpdate(ctx, NULL, &n, aad, (int)aad_len) != 1) return -1;
    size_t pos = 0;
    for (int i = 0; i < nparts; i++) {
        if (!lens[i]) continue;
        if (EVP_EncryptUpdate(ctx, out + pos, &n, parts[i], (int)lens[i]) != 1) return -1;
        pos += (size_t)n;
    }
    if (EVP_EncryptFinal_ex(ctx, out + pos, &n) != 1) return -1;
    pos += (size_t)n;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, out + pos) != 1) return -1;
    return 0;
}

/* Open: 1 authentic (plaintext in out), 0 not authentic, -1 OpenSSL failure. */
static int open_into(EVP_CIPHER_CTX *ctx, const uint8_t *nonce, const uint8_t *aad,
                     size_t aad_len, const uint8_t *ct, size_t ct_len, uint8_t *out) {
    int n;
    if (ct_len < TAG_LEN) return 0;
    size_t body = ct_len - TAG_LEN;
    if (EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1) return -1;
    if (aad_len && EVP_DecryptUpdate(ctx, NULL, &n, aad, (int)aad_len) != 1) return -1;
    if (body && EVP_DecryptUpdate(ctx, out, &n, ct, (int)body) != 1) return -1;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, (void *)(ct + body)) != 1)
        return -1;
    return EVP_DecryptFinal_ex(ctx, out + body, &n) == 1 ? 1 : 0;
}

static PyObject *openssl_failed(void) {
    PyErr_SetString(PyExc_RuntimeError, "OpenSSL AES-GCM call failed");
    return NULL;
}

/* seal(pn, header, payload) -> header || ciphertext || tag: one whole datagram. */
static PyObject *Aead_seal_packet(AeadObject *self, PyObject *args) {
    unsigned long long pn;
    Py_buffer header, payload;
    if (!PyArg_ParseTuple(args, "Ky*y*", &pn, &header, &payload)) return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, header.len + payload.len + TAG_LEN);
    if (out) {
        uint8_t nonce[NONCE_LEN];
        uint8_t *p = (uint8_t *)PyBytes_AS_STRING(out);
        make_nonce(self, pn, nonce);
        memcpy(p, header.buf, header.len);
        const uint8_t *parts[1] = {payload.buf};
        size_t lens[1] = {(size_t)payload.len};
        if (seal_into(self->enc, nonce, header.buf, header.len, parts, lens, 1, p + header.len)) {
            Py_CLEAR(out);
            openssl_failed();
        }
    }
    PyBuffer_Release(&header);
    PyBuffer_Release(&payload);
    return out;
}

/* seal(pn, aad, payload) -> ciphertext || tag (the AESGCM.encrypt contract). */
static PyObject *Aead_seal(AeadObject *self, PyObject *args) {
    unsigned long long pn;
    Py_buffer aad, payload;
    if (!PyArg_ParseTuple(args, "Ky*y*", &pn, &aad, &payload)) return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, payload.len + TAG_LEN);
    if (out) {
        uint8_t nonce[NONCE_LEN];
        make_nonce(self, pn, nonce);
        const uint8_t *parts[1] = {payload.buf};
        size_t lens[1] = {(size_t)payload.len};
        if (seal_into(self->enc, nonce, aad.buf, aad.len, parts, lens, 1,
                      (uint8_t *)PyBytes_AS_STRING(out))) {
            Py_CLEAR(out);
            openssl_failed();
        }
    }
    PyBuffer_Release(&aad);
    PyBuffer_Release(&payload);
    return out;
}

/* open(pn, aad, ciphertext_and_tag) -> plaintext, or None if not authentic. */
static PyObject *Aead_open(AeadObject *self, PyObject *args) {
    unsigned long long pn;
    Py_buffer aad, ct;
    if (!PyArg_ParseTuple(args, "Ky*y*", &pn, &aad, &ct)) return NULL;
    PyObject *out = NULL;
    if (ct.len < TAG_LEN) {
        out = Py_NewRef(Py_None);
    } else {
        out = PyBytes_FromStringAndSize(NULL, ct.len - TAG_LEN);
        if (out) {
            uint8_t nonce[NONCE_LEN];
            make_nonce(self, pn, nonce);
            int r = open_into(self->dec, nonce, aad.buf, aad.len, ct.buf, ct.len,
                              (uint8_t *)PyBytes_AS_STRING(out));
            if (r != 1) {
                Py_DECREF(out);
                out = r == 0 ? Py_NewRef(Py_None) : openssl_failed();
            }
        }
    }
    PyBuffer_Release(&aad);
    PyBuffer_Release(&ct);
    return out;
}

/* open_short(pn, datagram) -> plaintext or None: a short-header packet, header as AAD. */
static PyObject *Aead_open_short(AeadObject *self, PyObject *args) {
    unsigned long long pn;
    Py_buffer d;
    if (!PyArg_ParseTuple(args, "Ky*", &pn, &d)) return NULL;
    PyObject *out;
    if (d.len < SHORT_HEADER_LEN + TAG_LEN) {
        out = Py_NewRef(Py_None);
    } else {
        out = PyBytes_FromStringAndSize(NULL, d.len - SHORT_HEADER_LEN - TAG_LEN);
        if (out) {
            uint8_t nonce[NONCE_LEN];
            const uint8_t *p = d.buf;
            make_nonce(self, pn, nonce);
            int r = open_into(self->dec, nonce, p, SHORT_HEADER_LEN, p + SHORT_HEADER_LEN,
                              d.len - SHORT_HEADER_LEN, (uint8_t *)PyBytes_AS_STRING(out));
            if (r != 1) {
                Py_DECREF(out);
                out = r == 0 ? Py_NewRef(Py_None) : openssl_failed();
            }
        }
    }
    PyBuffer_Release(&d);
    return out;
}

/* seal_data_run(flags, dcid, first_pn, stream_id, offset, data, room, count) -> [datagram]
 *
 * `count` full 1-RTT packets, each one DATA frame (no FIN) of `room` bytes sliced in order
 * off `data` from its start: header(flags, dcid, pn) || seal(DATA header || slice). The
 * crypto runs without the GIL. */
static PyObject *Aead_seal_data_run(AeadObject *self, PyObject *args) {
    unsigned int flags, stream_id;
    Py_buffer dcid, data;
    unsigned long long first_pn, offset;
    Py_ssize_t room, count;
    if (!PyArg_ParseTuple(args, "Iy*KIKy*nn", &flags, &dcid, &first_pn, &stream_id, &offset,
                          &data, &room, &count))
        return NULL;
    PyObject *list = NULL;
    if (dcid.len != CID_LEN || room <= 0 || room > 0xFFFF || count < 0
        || room * count > data.len) {
        PyErr_SetString(PyExc_ValueError, "seal_data_run: bad cid, room or count");
        goto done;
    }
    list = PyList_New(count);
    if (!list) goto done;
    Py_ssize_t size = SHORT_HEADER_LEN + DATA_HEADER_LEN + room + TAG_LEN;
    uint8_t **outs = PyMem_Malloc(sizeof(uint8_t *) * (count ? count : 1));
    if (!outs) { Py_CLEAR(list); PyErr_NoMemory(); goto done; }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *b = PyBytes_FromStringAndSize(NULL, size);
        if (!b) { PyMem_Free(outs); Py_CLEAR(list); goto done; }
        PyList_SET_ITEM(list, i, b);
        outs[i] = (uint8_t *)PyBytes_AS_STRING(b);
    }
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count && !failed; i++) {
        uint64_t pn = first_pn + (uint64_t)i;
        uint8_t *p = outs[i], dh[DATA_HEADER_LEN], nonce[NONCE_LEN];
        p[0] = (uint8_t)flags;
        memcpy(p + 1, dcid.buf, CID_LEN);
        put_u32(p + 1 + CID_LEN, (uint32_t)pn);
        dh[0] = FRAME_DATA;
        put_u32(dh + 1, stream_id);
        put_u64(dh + 5, offset + (uint64_t)(i * room));
        put_u16(dh + 13, (uint32_t)room);
        make_nonce(self, pn, nonce);
        const uint8_t *parts[2] = {dh, (const uint8_t *)data.buf + i * room};
        size_t lens[2] = {DATA_HEADER_LEN, (size_t)room};
        failed = seal_into(self->enc, nonce, p, SHORT_HEADER_LEN, parts, lens, 2,
                           p + SHORT_HEADER_LEN);
    }
    Py_END_ALLOW_THREADS
    PyMem_Free(outs);
    if (failed) { Py_CLEAR(list); openssl_failed(); }
done:
    PyBuffer_Release(&dcid);
    PyBuffer_Release(&data);
    return list;
}

static PyObject *Aead_open_run(AeadObject *self, PyObject *const *args, Py_ssize_t nargs);

static PyMethodDef Aead_methods[] = {
    {"seal", (PyCFunction)Aead_seal, METH_VARARGS,
     "seal(pn, aad, payload) -> ciphertext || tag"},
    {"seal_packet", (PyCFunction)Aead_seal_packet, METH_VARARGS,
     "seal_packet(pn, header, payload) -> header || ciphertext || tag"},
    {"open", (PyCFunction)Aead_open, METH_VARARGS,
     "open(pn, aad, ciphertext_and_tag) -> plaintext or None"},
    {"open_short", (PyCFunction)Aead_open_short, METH_VARARGS,
     "open_short(pn, datagram) -> plaintext or None (13-byte header as AAD)"},
    {"seal_data_run", (PyCFunction)Aead_seal_data_run, METH_VARARGS,
     "seal_data_run(flags, dcid, first_pn, stream_id, offset, data, room, count) -> list"},
    {"open_run", (PyCFunction)(void (*)(void))Aead_open_run, METH_FASTCALL,
     "open_run(datagrams, index, flags, cid, received, floor, largest, peer)"
     " -> (stop, largest, nbytes, entries)"},
    {NULL}};

static PyObject *Aead_repr(PyObject *self) { return PyUnicode_FromString("Aead(<secret>)"); }

static PyTypeObject AeadType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "jetstream.datachannel._fast.Aead",
    .tp_basicsize = sizeof(AeadObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "AES-GCM of one direction and key phase: nonce = IV xor packet number.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Aead_init,
    .tp_dealloc = (destructor)Aead_dealloc,
    .tp_methods = Aead_methods,
    .tp_repr = Aead_repr,
};

/* ---------------------------------------------------------------------------------------- */
/* RangeSet: sorted, disjoint, non-adjacent half-open int64 ranges                           */
/* ---------------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    int64_t *starts;
    int64_t *stops;
    Py_ssize_t n, cap;
} RangeSetObject;

static PyTypeObject RangeSetType;

static int rs_reserve(RangeSetObject *s, Py_ssize_t need) {
    if (need <= s->cap) return 0;
    Py_ssize_t cap = s->cap ? s->cap * 2 : 8;
    while (cap < need) cap *= 2;
    int64_t *a = PyMem_Realloc(s->starts, cap * sizeof(int64_t));
    if (!a) { PyErr_NoMemory(); return -1; }
    s->starts = a;
    int64_t *b = PyMem_Realloc(s->stops, cap * sizeof(int64_t));
    if (!b) { PyErr_NoMemory(); return -1; }
    s->stops = b;
    s->cap = cap;
    return 0;
}

/* first index i with arr[i] >= v (bisect_left) / > v (bisect_right) */
static Py_ssize_t bisect_left64(const int64_t *a, Py_ssize_t n, int64_t v) {
    Py_ssize_t lo = 0, hi = n;
    while (lo < hi) { Py_ssize_t mid = (lo + hi) / 2; if (a[mid] < v) lo = mid + 1; else hi = mid; }
    return lo;
}
static Py_ssize_t bisect_right64(const int64_t *a, Py_ssize_t n, int64_t v) {
    Py_ssize_t lo = 0, hi = n;
    while (lo < hi) { Py_ssize_t mid = (lo + hi) / 2; if (v < a[mid]) hi = mid; else lo = mid + 1; }
    return lo;
}

static PyObject *pair(int64_t a, int64_t b) {
    PyObject *x = PyLong_FromLongLong(a), *y = PyLong_FromLongLong(b);
    if (!x || !y) { Py_XDECREF(x); Py_XDECREF(y); return NULL; }
    PyObject *t = PyTuple_Pack(2, x, y);
    Py_DECREF(x); Py_DECREF(y);
    return t;
}

static int append_pair(PyObject *list, int64_t a, int64_t b) {
    PyObject *t = pair(a, b);
    if (!t) return -1;
    int r = PyList_Append(list, t);
    Py_DECREF(t);
    return r;
}

/* Add [start, stop); fill `added` (may be NULL) with the sub-ranges that were new.
 * Returns the number of new sub-ranges, or -1 on error. */
static Py_ssize_t rs_add(RangeSetObject *s, int64_t start, int64_t stop, PyObject *added) {
    if (start >= stop) return 0;
    Py_ssize_t n = s->n;
    if (!n || start > s->stops[n - 1]) {
        if (rs_reserve(s, n + 1)) return -1;
        s->starts[n] = start; s->stops[n] = stop; s->n = n + 1;
        if (added && append_pair(added, start, stop)) return -1;
        return 1;
    }
    if (start >= s->starts[n - 1]) {
        int64_t last = s->stops[n - 1];
        if (stop <= last) return 0;
        s->stops[n - 1] = stop;
        if (added && append_pair(added, last, stop)) return -1;
        return 1;
    }
    Py_ssize_t first = bisect_left64(s->stops, n, start);
    Py_ssize_t end = bisect_right64(s->starts, n, stop);
    Py_ssize_t count = 0;
    int64_t cursor = start;
    for (Py_ssize_t i = first; i < end; i++) {
        if (s->starts[i] > cursor) {
            if (added && append_pair(added, cursor, s->starts[i])) return -1;
            count++;
        }
        if (s->stops[i] > cursor) cursor = s->stops[i];
    }
    if (cursor < stop) {
        if (added && append_pair(added, cursor, stop)) return -1;
        count++;
    }
    if (first < end) {
        if (s->starts[first] < start) start = s->starts[first];
        if (s->stops[end - 1] > stop) stop = s->stops[end - 1];
    }
    /* replace [first, end) by one range */
    Py_ssize_t removed = end - first; /* may be 0: an insertion */
    if (removed == 0) {
        if (rs_reserve(s, n + 1)) return -1;
        memmove(s->starts + first + 1, s->starts + first, (n - first) * sizeof(int64_t));
        memmove(s->stops + first + 1, s->stops + first, (n - first) * sizeof(int64_t));
        s->n = n + 1;
    } else if (removed > 1) {
        memmove(s->starts + first + 1, s->starts + end, (n - end) * sizeof(int64_t));
        memmove(s->stops + first + 1, s->stops + end, (n - end) * sizeof(int64_t));
        s->n = n - removed + 1;
    }
    s->starts[first] = start;
    s->stops[first] = stop;
    return count;
}

static int parse_i64(PyObject *o, int64_t *v) {
    long long x = PyLong_AsLongLong(o);
    if (x == -1 && PyErr_Occurred()) return -1;
    *v = x;
    return 0;
}

static int RangeSet_init(RangeSetObject *self, PyObject *args, PyObject *kwds) {
    PyObject *ranges = NULL;
    static char *kwlist[] = {"ranges", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O", kwlist, &ranges)) return -1;
    self->n = 0;
    if (!ranges) return 0;
    PyObject *it = PyObject_GetIter(ranges);
    if (!it) return -1;
    PyObject *item;
    while ((item = PyIter_Next(it))) {
        PyObject *a = NULL, *b = NULL;
        int64_t x, y;
        PyObject *seq = PySequence_Fast(item, "RangeSet: ranges are (start, stop) pairs");
        Py_DECREF(item);
        if (!seq) { Py_DECREF(it); return -1; }
        if (PySequence_Fast_GET_SIZE(seq) != 2) {
            Py_DECREF(seq); Py_DECREF(it);
            PyErr_SetString(PyExc_ValueError, "RangeSet: ranges are (start, stop) pairs");
            return -1;
        }
        a = PySequence_Fast_GET_ITEM(seq, 0);
        b = PySequence_Fast_GET_ITEM(seq, 1);
        int bad = parse_i64(a, &x) || parse_i64(b, &y) || rs_add(self, x, y, NULL) < 0;
        Py_DECREF(seq);
        if (bad) { Py_DECREF(it); return -1; }
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? -1 : 0;
}

static void RangeSet_dealloc(RangeSetObject *self) {
    PyMem_Free(self->starts);
    PyMem_Free(self->stops);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *RangeSet_add(RangeSetObject *self, PyObject *const *args, Py_ssize_t nargs) {
    int64_t start, stop;
    if (nargs != 2) { PyErr_SetString(PyExc_TypeError, "add(start, stop)"); return NULL; }
    if (parse_i64(args[0], &start) || parse_i64(args[1], &stop)) return NULL;
    PyObject *added = PyList_New(0);
    if (added && rs_add(self, start, stop, added) < 0) Py_CLEAR(added);
    return added;
}

static PyObject *RangeSet_add_one(RangeSetObject *self, PyObject *arg) {
    int64_t v;
    if (parse_i64(arg, &v)) return NULL;
    Py_ssize_t r = rs_add(self, v, v + 1, NULL);
    if (r < 0) return NULL;
    return PyBool_FromLong(r > 0);
}

static int rs_contains(const RangeSetObject *s, int64_t v) {
    Py_ssize_t i = bisect_right64(s->starts, s->n, v) - 1;
    return i >= 0 && v < s->stops[i];
}

static int RangeSet_contains(RangeSetObject *self, PyObject *value) {
    if (!PyLong_Check(value)) return 0;
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow) return 0;
    if (v == -1 && PyErr_Occurred()) return -1;
    return rs_contains(self, v);
}

static PyObject *RangeSet_covers(RangeSetObject *self, PyObject *const *args, Py_ssize_t nargs) {
    int64_t start, stop;
    if (nargs != 2) { PyErr_SetString(PyExc_TypeError, "covers(start, stop)"); return NULL; }
    if (parse_i64(args[0], &start) || parse_i64(args[1], &stop)) return NULL;
    if (start >= stop) Py_RETURN_TRUE;
    Py_ssize_t i = bisect_right64(self->starts, self->n, start) - 1;
    return PyBool_FromLong(i >= 0 && self->stops[i] >= stop);
}

static PyObject *RangeSet_pop_first(RangeSetObject *self, PyObject *unused) {
    if (!self->n) { PyErr_SetString(PyExc_IndexError, "pop from an empty RangeSet"); return NULL; }
    PyObject *t = pair(self->starts[0], self->stops[0]);
    if (!t) return NULL;
    self->n--;
    memmove(self->starts, self->starts + 1, self->n * sizeof(int64_t));
    memmove(self->stops, self->stops + 1, self->n * sizeof(int64_t));
    return t;
}

static PyObject *RangeSet_last(RangeSetObject *self, PyObject *unused) {
    if (!self->n) { PyErr_SetString(PyExc_IndexError, "last of an empty RangeSet"); return NULL; }
    return pair(self->starts[self->n - 1], self->stops[self->n - 1]);
}

static PyObject *RangeSet_descending(RangeSetObject *self, PyObject *arg) {
    Py_ssize_t limit = PyLong_AsSsize_t(arg);
    if (limit == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t count = limit < self->n ? (limit > 0 ? limit : 0) : self->n;
    PyObject *list = PyList_New(count);
    if (!list) return NULL;
    for (Py_ssize_t k = 0; k < count; k++) {
        Py_ssize_t i = self->n - 1 - k;
        PyObject *t = pair(self->starts[i], self->stops[i]);
        if (!t) { Py_DECREF(list); return NULL; }
        PyList_SET_ITEM(list, k, t);
    }
    return list;
}

/* encode_ack(limit, delay_us) -> the ACK frame of the highest `limit` ranges */
static PyObject *RangeSet_encode_ack(RangeSetObject *self, PyObject *const *args,
                                     Py_ssize_t nargs) {
    Py_ssize_t limit;
    unsigned long long delay;
    if (nargs != 2) { PyErr_SetString(PyExc_TypeError, "encode_ack(limit, delay_us)"); return NULL; }
    limit = PyLong_AsSsize_t(args[0]);
    if (limit == -1 && PyErr_Occurred()) return NULL;
    delay = PyLong_AsUnsignedLongLong(args[1]);
    if (delay == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    Py_ssize_t count = limit < self->n ? limit : self->n;
    if (count <= 0) { PyErr_SetString(PyExc_ValueError, "an ACK needs a range"); return NULL; }
    PyObject *out = PyBytes_FromStringAndSize(NULL, ACK_BASE_LEN + (count - 1) * 8);
    if (!out) return NULL;
    uint8_t *p = (uint8_t *)PyBytes_AS_STRING(out);
    Py_ssize_t top = self->n - 1;
    int64_t largest = self->stops[top] - 1;
    p[0] = FRAME_ACK;
    put_u64(p + 1, (uint64_t)largest);
    put_u32(p + 9, delay > 0xFFFFFFFFULL ? 0xFFFFFFFFU : (uint32_t)delay);
    put_u16(p + 13, (uint32_t)count);
    put_u32(p + 15, (uint32_t)(largest - self->starts[top]));
    p += ACK_BASE_LEN;
    int64_t previous_low = self->starts[top];
    for (Py_ssize_t k = 1; k < count; k++) {
        Py_ssize_t i = top - k;
        put_u32(p, (uint32_t)(previous_low - self->stops[i] - 1));
        put_u32(p + 4, (uint32_t)(self->stops[i] - 1 - self->starts[i]));
        previous_low = self->starts[i];
        p += 8;
    }
    return out;
}

static Py_ssize_t RangeSet_len(RangeSetObject *self) { return self->n; }

static PyObject *RangeSet_iter(RangeSetObject *self) {
    PyObject *list = PyList_New(self->n);
    if (!list) return NULL;
    for (Py_ssize_t i = 0; i < self->n; i++) {
        PyObject *t = pair(self->starts[i], self->stops[i]);
        if (!t) { Py_DECREF(list); return NULL; }
        PyList_SET_ITEM(list, i, t);
    }
    PyObject *it = PyObject_GetIter(list);
    Py_DECREF(list);
    return it;
}

static PyObject *RangeSet_richcompare(PyObject *a, PyObject *b, int op) {
    if (!PyObject_TypeCheck(b, &RangeSetType) || (op != Py_EQ && op != Py_NE))
        Py_RETURN_NOTIMPLEMENTED;
    RangeSetObject *x = (RangeSetObject *)a, *y = (RangeSetObject *)b;
    int eq = x->n == y->n && !memcmp(x->starts, y->starts, x->n * sizeof(int64_t))
             && !memcmp(x->stops, y->stops, x->n * sizeof(int64_t));
    return PyBool_FromLong(op == Py_EQ ? eq : !eq);
}

static PyObject *RangeSet_repr(RangeSetObject *self) {
    PyObject *it = RangeSet_iter(self);
    if (!it) return NULL;
    PyObject *list = PySequence_List(it);
    Py_DECREF(it);
    if (!list) return NULL;
    PyObject *r = PyUnicode_FromFormat("RangeSet(%R)", list);
    Py_DECREF(list);
    return r;
}

static PyMethodDef RangeSet_methods[] = {
    {"add", (PyCFunction)(void (*)(void))RangeSet_add, METH_FASTCALL,
     "add(start, stop) -> the sub-ranges that were not in the set before"},
    {"add_one", (PyCFunction)RangeSet_add_one, METH_O, "add_one(value) -> True if new"},
    {"covers", (PyCFunction)(void (*)(void))RangeSet_covers, METH_FASTCALL,
     "covers(start, stop) -> True if every integer of [start, stop) is in the set"},
    {"pop_first", (PyCFunction)RangeSet_pop_first, METH_NOARGS, "remove the lowest range"},
    {"last", (PyCFunction)RangeSet_last, METH_NOARGS, "the highest range"},
    {"descending", (PyCFunction)RangeSet_descending, METH_O,
     "descending(limit) -> the highest ranges, highest first"},
    {"encode_ack", (PyCFunction)(void (*)(void))RangeSet_encode_ack, METH_FASTCALL,
     "encode_ack(limit, delay_us) -> ACK frame of the highest `limit` ranges"},
    {NULL}};

static PySequenceMethods RangeSet_as_sequence = {
    .sq_length = (lenfunc)RangeSet_len,
    .sq_contains = (objobjproc)RangeSet_contains,
};

static PyTypeObject RangeSetType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "jetstream.datachannel._fast.RangeSet",
    .tp_basicsize = sizeof(RangeSetObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Sorted, disjoint, non-adjacent half-open int64 ranges [start, stop).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)RangeSet_init,
    .tp_dealloc = (destructor)RangeSet_dealloc,
    .tp_methods = RangeSet_methods,
    .tp_as_sequence = &RangeSet_as_sequence,
    .tp_iter = (getiterfunc)RangeSet_iter,
    .tp_richcompare = RangeSet_richcompare,
    .tp_repr = (reprfunc)RangeSet_repr,
    .tp_hash = PyObject_HashNotImplemented,
};

/* ---------------------------------------------------------------------------------------- */
/* Receive runs: a batch of one connection's 1-RTT datagrams opened in one call              */
/* ---------------------------------------------------------------------------------------- */

#define PACKET_NUMBER_LIMIT (((int64_t)1) << 62)

/* wire.decode_packet_number: expand a 32-bit packet number next to the largest received. */
static int64_t decode_pn(uint32_t truncated, int64_t largest) {
    int64_t expected = largest + 1;
    int64_t candidate = (expected & ~(int64_t)0xFFFFFFFF) | (int64_t)truncated;
    if (candidate <= expected - 0x80000000LL && candidate < PACKET_NUMBER_LIMIT - 0x100000000LL)
        return candidate + 0x100000000LL;
    if (candidate > expected + 0x80000000LL && candidate >= 0x100000000LL)
        return candidate - 0x100000000LL;
    return candidate;
}

typedef struct {
    Py_buffer view;
    int64_t pn;
    PyObject *own;                 /* the whole plaintext when it is shorter than a DATA header */
    Py_ssize_t at;                 /* else: where the rest of its plaintext is in the run buffer */
    uint8_t head[DATA_HEADER_LEN]; /* and its first plaintext bytes */
} RunSlot;

static Py_ssize_t slot_body(const RunSlot *slot) {
    return slot->view.len - SHORT_HEADER_LEN - TAG_LEN;
}

/* The packet is exactly one DATA frame without FIN: its data is the rest of the plaintext. */
static int slot_is_data(const RunSlot *slot) {
    if (slot->own) return 0;
    const uint8_t *h = slot->head;
    uint64_t offset = get_u64(h + 5), length = get_u16(h + 13);
    return h[0] == FRAME_DATA && (Py_ssize_t)length == slot_body(slot) - DATA_HEADER_LEN
           && offset <= MAX_STREAM_OFFSET - length;
}

/* bytes [a, b) of the run buffer: itself when whole, else a read-only memoryview slice. */
static PyObject *run_slice(PyObject *buffer, PyObject **view, Py_ssize_t a, Py_ssize_t b) {
    if (a == 0 && b == PyBytes_GET_SIZE(buffer)) return Py_NewRef(buffer);
    if (!*view && !(*view = PyMemoryView_FromObject(buffer))) return NULL;
    return PySequence_GetSlice(*view, a, b);
}

/* The whole plaintext of a packet that is not one plain DATA frame (rare: copied). */
static PyObject *slot_plaintext(const RunSlot *slot, PyObject *buffer) {
    if (slot->own) return Py_NewRef(slot->own);
    Py_ssize_t rest = slot_body(slot) - DATA_HEADER_LEN;
    PyObject *whole = PyBytes_FromStringAndSize(NULL, DATA_HEADER_LEN + rest);
    if (!whole) return NULL;
    memcpy(PyBytes_AS_STRING(whole), slot->head, DATA_HEADER_LEN);
    memcpy(PyBytes_AS_STRING(whole) + DATA_HEADER_LEN, PyBytes_AS_STRING(buffer) + slot->at, rest);
    return whole;
}

/* Entries of the opened slots: consecutive DATA packets that continue each other in one
 * stream become one entry (pn of the last, stream, offset, their data in one buffer). */
static int run_entries(RunSlot *slots, Py_ssize_t opened, PyObject *buffer, PyObject *entries) {
    PyObject *view = NULL, *entry = NULL;
    int failed = 0;
    for (Py_ssize_t i = 0; i < opened && !failed;) {
        RunSlot *first = &slots[i];
        if (slot_is_data(first)) {
            uint32_t stream = get_u32(first->head + 1);
            uint64_t offset = get_u64(first->head + 5);
            uint64_t end = offset + get_u16(first->head + 13);
            Py_ssize_t j = i + 1;
            while (j < opened && slot_is_data(&slots[j]) && get_u32(slots[j].head + 1) == stream
                   && get_u64(slots[j].head + 5) == end) {
                end += get_u16(slots[j].head + 13);
                j++;
            }
            PyObject *data = run_slice(buffer, &view, first->at,
                                       first->at + (Py_ssize_t)(end - offset));
            entry = data ? Py_BuildValue("(LIKN)", (long long)slots[j - 1].pn, stream,
                                         (unsigned long long)offset, data) : NULL;
            i = j;
        } else {
            PyObject *plaintext = slot_plaintext(first, buffer);
            entry = plaintext ? Py_BuildValue("(LiiN)", (long long)first->pn, -1, 0, plaintext)
                              : NULL;
            i++;
        }
        failed = !entry || PyList_Append(entries, entry) < 0;
        Py_XDECREF(entry);
    }
    Py_XDECREF(view);
    return failed ? -1 : 0;
}

/* open_run(datagrams, index, flags, cid, received, floor, largest, peer)
 *     -> (stop, largest, nbytes, entries)
 *
 * Opens datagrams[index:] while each is a (data, addr) pair from `peer` with a short header
 * whose first byte is `flags` (so the current key phase) and whose connection id is `cid`,
 * is neither a replay (below `floor`, or in `received`) nor forged. The packet numbers of the
 * opened ones are added to `received`; `stop` is the index of the first datagram not opened
 * (the caller's slow path decides what it is). The data of every packet is decrypted into one
 * buffer, in order, and the crypto runs without the GIL. */
static PyObject *Aead_open_run(AeadObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError,
                        "open_run(datagrams, index, flags, cid, received, floor, largest, peer)");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(args[0], "open_run: datagrams must be a sequence");
    if (!seq) return NULL;
    Py_ssize_t index = PyLong_AsSsize_t(args[1]);
    long flags = PyLong_AsLong(args[2]);
    int64_t floor_pn, largest;
    PyObject *cid = args[3], *peer = args[7];
    RangeSetObject *received = (RangeSetObject *)args[4];
    if ((index == -1 || flags == -1) && PyErr_Occurred()) { Py_DECREF(seq); return NULL; }
    if (parse_i64(args[5], &floor_pn) || parse_i64(args[6], &largest)) { Py_DECREF(seq); return NULL; }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (!PyBytes_Check(cid) || PyBytes_GET_SIZE(cid) != CID_LEN
        || !PyObject_TypeCheck(args[4], &RangeSetType) || index < 0 || index > n) {
        PyErr_SetString(PyExc_ValueError, "open_run: bad cid, received set or index");
        Py_DECREF(seq);
        return NULL;
    }
    PyObject **items = PySequence_Fast_ITEMS(seq);
    Py_ssize_t cap = n - index, m = 0, opened = 0, total = 0;
    RunSlot *slots = PyMem_Calloc(cap ? cap : 1, sizeof(RunSlot));
    PyObject *entries = NULL, *result = NULL, *buffer = NULL;
    if (!slots) { PyErr_NoMemory(); goto done; }
    /* 1. headers (with the GIL): which datagrams belong to the run, and their numbers */
    int64_t running = largest;
    for (Py_ssize_t k = index; k < n; k++) {
        PyObject *item = items[k];
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) break;
        PyObject *addr = PyTuple_GET_ITEM(item, 1);
        if (addr != peer) {
            int same = PyObject_RichCompareBool(addr, peer, Py_EQ);
            if (same < 0) PyErr_Clear();
            if (same != 1) break;
        }
        RunSlot *slot = &slots[m];
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(item, 0), &slot->view, PyBUF_SIMPLE)) {
            PyErr_Clear();
            break;
        }
        const uint8_t *p = slot->view.buf;
        int64_t pn = 0;
        int ok = slot->view.len >= SHORT_HEADER_LEN + TAG_LEN && p[0] == (uint8_t)flags
                 && memcmp(p + 1, PyBytes_AS_STRING(cid), CID_LEN) == 0;
        if (ok) {
            pn = decode_pn(get_u32(p + 1 + CID_LEN), running);
            if (pn <= running) {
                ok = pn >= floor_pn && !rs_contains(received, pn);
                for (Py_ssize_t j = 0; ok && j < m; j++) ok = slots[j].pn != pn;
            }
        }
        if (ok && slot_body(slot) < DATA_HEADER_LEN) {
            slot->own = PyBytes_FromStringAndSize(NULL, slot_body(slot));
            ok = slot->own != NULL;
        }
        if (!ok) {
            PyBuffer_Release(&slot->view);
            if (PyErr_Occurred()) goto done;
            break;
        }
        if (!slot->own) {
            slot->at = total;
            total += slot_body(slot) - DATA_HEADER_LEN;
        }
        slot->pn = pn;
        if (pn > running) running = pn;
        m++;
    }
    buffer = PyBytes_FromStringAndSize(NULL, total);
    if (!buffer) goto done;
    /* 2. crypto (without the GIL): open in order, stopping at the first forgery */
    int failed = 0;
    uint8_t *data = (uint8_t *)PyBytes_AS_STRING(buffer);
    Py_BEGIN_ALLOW_THREADS
    for (; opened < m; opened++) {
        RunSlot *slot = &slots[opened];
        const uint8_t *p = slot->view.buf;
        const uint8_t *ct = p + SHORT_HEADER_LEN;
        Py_ssize_t body = slot_body(slot);
        uint8_t nonce[NONCE_LEN], *out;
        int k;
        make_nonce(self, (uint64_t)slot->pn, nonce);
        EVP_CIPHER_CTX *ctx = self->dec;
        if (EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1
            || EVP_DecryptUpdate(ctx, NULL, &k, p, SHORT_HEADER_LEN) != 1) { failed = 1; break; }
        if (slot->own) {
            out = (uint8_t *)PyBytes_AS_STRING(slot->own);
        } else {
            if (EVP_DecryptUpdate(ctx, slot->head, &k, ct, DATA_HEADER_LEN) != 1) { failed = 1; break; }
            ct += DATA_HEADER_LEN;
            body -= DATA_HEADER_LEN;
            out = data + slot->at;
        }
        if ((body && EVP_DecryptUpdate(ctx, out, &k, ct, (int)body) != 1)
            || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, (void *)(ct + body)) != 1) {
            failed = 1;
            break;
        }
        if (EVP_DecryptFinal_ex(ctx, out + body, &k) != 1) break; /* not authentic */
    }
    Py_END_ALLOW_THREADS
    if (failed) { openssl_failed(); goto done; }
    /* 3. results (with the GIL): record the authentic ones */
    Py_ssize_t nbytes = 0, used = 0;
    for (Py_ssize_t i = 0; i < opened; i++) {
        if (rs_add(received, slots[i].pn, slots[i].pn + 1, NULL) < 0) goto done;
        nbytes += slots[i].view.len;
        if (slots[i].pn > largest) largest = slots[i].pn;
        if (!slots[i].own) used = slots[i].at + slot_body(&slots[i]) - DATA_HEADER_LEN;
    }
    if (used < total && _PyBytes_Resize(&buffer, used) < 0) goto done; /* stopped early */
    entries = PyList_New(0);
    if (!entries || run_entries(slots, opened, buffer, entries) < 0) goto done;
    result = Py_BuildValue("(nLnO)", index + opened, (long long)largest, nbytes, entries);
done:
    if (slots) {
        for (Py_ssize_t i = 0; i < m; i++) {
            PyBuffer_Release(&slots[i].view);
            Py_XDECREF(slots[i].own);
        }
        PyMem_Free(slots);
    }
    Py_XDECREF(buffer);
    Py_XDECREF(entries);
    Py_DECREF(seq);
    return result;
}

/* ---------------------------------------------------------------------------------------- */
/* Frames                                                                                    */
/* ---------------------------------------------------------------------------------------- */

static PyObject *raise_malformed(const char *what) {
    PyObject *msg = PyUnicode_FromString(what);
    if (msg) {
        PyObject *exc = PyObject_CallOneArg(malformed_error, msg);
        Py_DECREF(msg);
        if (exc) { PyErr_SetObject((PyObject *)Py_TYPE(exc), exc); Py_DECREF(exc); }
    }
    return NULL;
}

/* (low, high + 1) as Python ints, for unsigned 64-bit values (high + 1 may be 2**64). */
static PyObject *upair(uint64_t low, uint64_t high) {
    PyObject *x = PyLong_FromUnsignedLongLong(low), *y;
    if (high < UINT64_MAX) {
        y = PyLong_FromUnsignedLongLong(high + 1);
    } else {
        PyObject *h = PyLong_FromUnsignedLongLong(high), *one = PyLong_FromLong(1);
        y = h && one ? PyNumber_Add(h, one) : NULL;
        Py_XDECREF(h); Py_XDECREF(one);
    }
    if (!x || !y) { Py_XDECREF(x); Py_XDECREF(y); return NULL; }
    PyObject *t = PyTuple_Pack(2, x, y);
    Py_DECREF(x); Py_DECREF(y);
    return t;
}

/* pull_ack_frame(buf, pos) -> (largest, delay_us, ranges tuple, next pos), as
 * wire.pull_ack_frame decodes it (section 4 of docs/protocol.md). */
static PyObject *pull_ack_frame(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer b;
    if (nargs != 2) { PyErr_SetString(PyExc_TypeError, "pull_ack_frame(buf, pos)"); return NULL; }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred()) return NULL;
    if (PyObject_GetBuffer(args[0], &b, PyBUF_SIMPLE)) return NULL;
    PyObject *result = NULL, *ranges = NULL;
    const uint8_t *p = (const uint8_t *)b.buf;
    if (pos < 0 || pos + ACK_BASE_LEN > b.len) { raise_malformed("ACK frame"); goto done; }
    uint64_t largest = get_u64(p + pos + 1);
    uint32_t delay = get_u32(p + pos + 9);
    uint32_t count = get_u16(p + pos + 13);
    uint64_t first = get_u32(p + pos + 15);
    pos += ACK_BASE_LEN;
    if (count == 0 || first > largest || pos + (Py_ssize_t)(count - 1) * 8 > b.len) {
        raise_malformed("ACK frame");
        goto done;
    }
    ranges = PyTuple_New(count);
    if (!ranges) goto done;
    uint64_t low = largest - first;
    PyObject *t = upair(low, largest);
    if (!t) goto done;
    PyTuple_SET_ITEM(ranges, 0, t);
    for (uint32_t k = 1; k < count; k++) {
        uint64_t gap = (uint64_t)get_u32(p + pos) + 2, length = get_u32(p + pos + 4);
        pos += 8;
        if (low < gap + length) { raise_malformed("ACK frame"); goto done; }
        uint64_t high = low - gap;
        low = high - length;
        t = upair(low, high);
        if (!t) goto done;
        PyTuple_SET_ITEM(ranges, k, t);
    }
    result = Py_BuildValue("(KIOn)", (unsigned long long)largest, delay, ranges, pos);
done:
    Py_XDECREF(ranges);
    PyBuffer_Release(&b);
    return result;
}

/* ---------------------------------------------------------------------------------------- */
/* Batched socket I/O                                                                        */
/* ---------------------------------------------------------------------------------------- */

static int parse_address(PyObject *addr, struct sockaddr_storage *ss, socklen_t *len) {
    const char *host;
    int port;
    unsigned int flowinfo = 0, scope_id = 0;
    if (!PyArg_ParseTuple(addr, "si|II", &host, &port, &flowinfo, &scope_id)) return -1;
    memset(ss, 0, sizeof(*ss));
    if (strchr(host, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        char buf[INET6_ADDRSTRLEN + 1];
        const char *pct = strchr(host, '%');
        size_t n = pct ? (size_t)(pct - host) : strlen(host);
        if (n >= sizeof(buf)) goto bad;
        memcpy(buf, host, n);
        buf[n] = 0;
        if (inet_pton(AF_INET6, buf, &a->sin6_addr) != 1) goto bad;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        a->sin6_flowinfo = htonl(flowinfo);
        a->sin6_scope_id = scope_id;
        *len = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1) goto bad;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        *len = sizeof(*a);
    }
    return 0;
bad:
    PyErr_Format(PyExc_ValueError, "not a numeric IP address: %s", host);
    return -1;
}

static PyObject *make_address(const struct sockaddr_storage *ss) {
    char buf[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof(buf));
        return Py_BuildValue("(siII)", buf, ntohs(a->sin6_port), ntohl(a->sin6_flowinfo),
                             a->sin6_scope_id);
    }
    const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
    inet_ntop(AF_INET, &a->sin_addr, buf, sizeof(buf));
    return Py_BuildValue("(si)", buf, ntohs(a->sin_port));
}

#define SEND_MSGS 64

/* send_batch(fd, datagrams, addr, gso) -> (datagrams the kernel took, sendmmsg calls).
 *
 * Groups as udpio._gso_groups does (equal sizes, only the last of a group shorter, at most
 * 64 segments and 65000 bytes), one message per group with a UDP_SEGMENT cmsg, up to 64
 * messages per sendmmsg. Returns early at EAGAIN; raises OSError if nothing was sent. */
static PyObject *send_batch(PyObject *module, PyObject *args) {
    int fd, gso;
    PyObject *seq, *addr;
    if (!PyArg_ParseTuple(args, "iO!Op", &fd, &PyList_Type, &seq, &addr, &gso)) return NULL;
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (parse_address(addr, &ss, &sslen)) return NULL;
    Py_ssize_t total = PyList_GET_SIZE(seq);
    Py_ssize_t sent = 0, calls = 0;
    struct iovec iov[SEND_MSGS * MAX_GSO_SEGMENTS];
    struct mmsghdr msgs[SEND_MSGS];
    Py_ssize_t group_count[SEND_MSGS];
    union {
        char buf[CMSG_SPACE(sizeof(uint16_t))];
        struct cmsghdr align;
    } control[SEND_MSGS];
    int err = 0;
    while (sent < total) {
        int nmsgs = 0, niov = 0;
        Py_ssize_t i = sent;
        while (i < total && nmsgs < SEND_MSGS) {
            PyObject *d = PyList_GET_ITEM(seq, i);
            if (!PyBytes_Check(d)) {
                PyErr_SetString(PyExc_TypeError, "send_batch: datagrams must be bytes");
                return NULL;
            }
            Py_ssize_t size = PyBytes_GET_SIZE(d), bytes = 0, n = 0;
            struct iovec *first = iov + niov;
            while (i < total && n < (gso ? MAX_GSO_SEGMENTS : 1)) {
                PyObject *e = PyList_GET_ITEM(seq, i);
                if (!PyBytes_Check(e)) {
                    PyErr_SetString(PyExc_TypeError, "send_batch: datagrams must be bytes");
                    return NULL;
                }
                Py_ssize_t len = PyBytes_GET_SIZE(e);
                if (n && (len == 0 || len > size || bytes + len > MAX_GSO_BYTES)) break;
                iov[niov].iov_base = PyBytes_AS_STRING(e);
                iov[niov].iov_len = (size_t)len;
                niov++; n++; i++; bytes += len;
                if (len < size) break; /* a shorter datagram can only end a group */
            }
            struct msghdr *m = &msgs[nmsgs].msg_hdr;
            memset(m, 0, sizeof(*m));
            m->msg_name = &ss;
            m->msg_namelen = sslen;
            m->msg_iov = first;
            m->msg_iovlen = (size_t)n;
            if (n > 1) {
                m->msg_control = control[nmsgs].buf;
                m->msg_controllen = sizeof(control[nmsgs].buf);
                struct cmsghdr *c = CMSG_FIRSTHDR(m);
                c->cmsg_level = SOL_UDP;
                c->cmsg_type = UDP_SEGMENT;
                c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
                uint16_t seg = (uint16_t)size;
                memcpy(CMSG_DATA(c), &seg, sizeof(seg));
            }
            group_count[nmsgs] = n;
            nmsgs++;
        }
        int r;
        Py_BEGIN_ALLOW_THREADS
        do { r = sendmmsg(fd, msgs, (unsigned int)nmsgs, MSG_DONTWAIT); } while (r < 0 && errno == EINTR);
        err = errno;
        Py_END_ALLOW_THREADS
        if (r < 0) {
            if (err == EAGAIN || err == EWOULDBLOCK) break;
            if (sent == 0) { errno = err; return PyErr_SetFromErrno(PyExc_OSError); }
            break; /* report what went out; the caller retries the rest and sees the error */
        }
        calls++;
        for (int k = 0; k < r; k++) sent += group_count[k];
        if (r < nmsgs) break;
    }
    return Py_BuildValue("(nn)", sent, calls);
}

/* BatchReceiver(fd, slots): recvmmsg into `slots` 64 KiB buffers, GRO segments split. */
typedef struct {
    PyObject_HEAD
    int fd;
    int slots;
    uint8_t *buffers;
    struct mmsghdr *msgs;
    struct iovec *iov;
    struct sockaddr_storage *names;
    char *controls;
    struct sockaddr_storage last_name;
    socklen_t last_len;
    PyObject *last_addr;
    unsigned long long calls;
} ReceiverObject;

#define RECV_CONTROL_SPACE CMSG_SPACE(sizeof(int))

static int Receiver_init(ReceiverObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"fd", "slots", NULL};
    int slots = 32;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i|i", kwlist, &self->fd, &slots)) return -1;
    if (slots < 1 || slots > 1024) {
        PyErr_SetString(PyExc_ValueError, "BatchReceiver: 1 to 1024 slots");
        return -1;
    }
    self->slots = slots;
    self->buffers = PyMem_Malloc((size_t)slots * RECV_SLOT_BYTES);
    self->msgs = PyMem_Calloc(slots, sizeof(struct mmsghdr));
    self->iov = PyMem_Calloc(slots, sizeof(struct iovec));
    self->names = PyMem_Calloc(slots, sizeof(struct sockaddr_storage));
    self->controls = PyMem_Calloc(slots, RECV_CONTROL_SPACE);
    if (!self->buffers || !self->msgs || !self->iov || !self->names || !self->controls) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void Receiver_dealloc(ReceiverObject *self) {
    PyMem_Free(self->buffers);
    PyMem_Free(self->msgs);
    PyMem_Free(self->iov);
    PyMem_Free(self->names);
    PyMem_Free(self->controls);
    Py_XDECREF(self->last_addr);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Receiver_address(ReceiverObject *self, const struct sockaddr_storage *ss,
                                  socklen_t len) {
    if (self->last_addr && len == self->last_len && !memcmp(ss, &self->last_name, len))
        return Py_NewRef(self->last_addr);
    PyObject *a = make_address(ss);
    if (!a) return NULL;
    Py_XSETREF(self->last_addr, Py_NewRef(a));
    memcpy(&self->last_name, ss, len);
    self->last_len = len;
    return a;
}

static int gro_segment(struct msghdr *m) {
    for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
        if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
            int seg;
            memcpy(&seg, CMSG_DATA(c), sizeof(seg));
            return seg;
        }
    }
    return 0;
}

/* receive(limit) -> [(datagram bytes, address)]: what is waiting, about `limit` at most. */
static PyObject *Receiver_receive(ReceiverObject *self, PyObject *arg) {
    Py_ssize_t limit = PyLong_AsSsize_t(arg);
    if (limit == -1 && PyErr_Occurred()) return NULL;
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    while (PyList_GET_SIZE(out) < limit) {
        int want = self->slots;
        for (int k = 0; k < want; k++) {
            struct msghdr *m = &self->msgs[k].msg_hdr;
            self->iov[k].iov_base = self->buffers + (size_t)k * RECV_SLOT_BYTES;
            self->iov[k].iov_len = RECV_SLOT_BYTES;
            m->msg_iov = &self->iov[k];
            m->msg_iovlen = 1;
            m->msg_name = &self->names[k];
            m->msg_namelen = sizeof(struct sockaddr_storage);
            m->msg_control = self->controls + (size_t)k * RECV_CONTROL_SPACE;
            m->msg_controllen = RECV_CONTROL_SPACE;
            m->msg_flags = 0;
        }
        int r, err;
        Py_BEGIN_ALLOW_THREADS
        do { r = recvmmsg(self->fd, self->msgs, (unsigned int)want, MSG_DONTWAIT, NULL); }
        while (r < 0 && errno == EINTR);
        err = errno;
        Py_END_ALLOW_THREADS
        if (r < 0) {
            if (err == EAGAIN || err == EWOULDBLOCK) break;
            if (err == ECONNREFUSED) continue; /* an ICMP error for an earlier send */
            errno = err;
            Py_DECREF(out);
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        self->calls++;
        for (int k = 0; k < r; k++) {
            struct msghdr *m = &self->msgs[k].msg_hdr;
            size_t nbytes = self->msgs[k].msg_len;
            const uint8_t *base = self->buffers + (size_t)k * RECV_SLOT_BYTES;
            PyObject *addr = Receiver_address(self, &self->names[k], m->msg_namelen);
            if (!addr) { Py_DECREF(out); return NULL; }
            size_t seg = m->msg_controllen ? (size_t)gro_segment(m) : 0;
            if (!seg || seg > nbytes) seg = nbytes;
            size_t start = 0;
            do {
                size_t len = nbytes - start < seg ? nbytes - start : seg;
                PyObject *d = PyBytes_FromStringAndSize((const char *)base + start, len);
                PyObject *t = d ? PyTuple_Pack(2, d, addr) : NULL;
                Py_XDECREF(d);
                if (!t || PyList_Append(out, t)) {
                    Py_XDECREF(t); Py_DECREF(addr); Py_DECREF(out);
                    return NULL;
                }
                Py_DECREF(t);
                start += len;
            } while (start < nbytes);
            Py_DECREF(addr);
        }
        if (r < want) break; /* drained */
    }
    return out;
}

static PyObject *Receiver_get_calls(ReceiverObject *self, void *closure) {
    return PyLong_FromUnsignedLongLong(self->calls);
}

static PyMethodDef Receiver_methods[] = {
    {"receive", (PyCFunction)Receiver_receive, METH_O,
     "receive(limit) -> [(datagram, address)] waiting on the socket ([] when none)"},
    {NULL}};

static PyGetSetDef Receiver_getset[] = {
    {"calls", (getter)Receiver_get_calls, NULL, "recvmmsg calls that returned data", NULL},
    {NULL}};

static PyTypeObject ReceiverType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "jetstream.datachannel._fast.BatchReceiver",
    .tp_basicsize = sizeof(ReceiverObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "recvmmsg into preallocated buffers; GRO-coalesced reads split per datagram.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Receiver_init,
    .tp_dealloc = (destructor)Receiver_dealloc,
    .tp_methods = Receiver_methods,
    .tp_getset = Receiver_getset,
};

/* ---------------------------------------------------------------------------------------- */

static PyObject *set_malformed(PyObject *module, PyObject *factory) {
    Py_XSETREF(malformed_error, Py_NewRef(factory));
    Py_RETURN_NONE;
}

/* gather(dest, pos, buffers) -> pos after them: the buffers of a list copied back to back
   into the writable buffer dest from pos, without the GIL (a received file's pieces into
   the receiver's aligned staging buffer, storage/directio.py). */
static PyObject *gather(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyList_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "gather(dest, pos, buffers: list)");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred()) return NULL;
    PyObject *list = args[2];
    Py_ssize_t count = PyList_GET_SIZE(list), held = 0, end = pos;
    Py_buffer dest;
    if (PyObject_GetBuffer(args[0], &dest, PyBUF_WRITABLE) < 0) return NULL;
    PyObject *result = NULL;
    Py_buffer *views = PyMem_Calloc(count ? (size_t)count : 1, sizeof(Py_buffer));
    if (!views) {
        PyErr_NoMemory();
        goto done;
    }
    for (; held < count; held++) {
        if (PyObject_GetBuffer(PyList_GET_ITEM(list, held), &views[held], PyBUF_SIMPLE) < 0)
            goto done;
        end += views[held].len;
    }
    if (pos < 0 || end > dest.len) {
        PyErr_SetString(PyExc_ValueError, "gather: the buffers do not fit");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    char *out = (char *)dest.buf + pos;
    for (Py_ssize_t i = 0; i < count; i++) {
        memcpy(out, views[i].buf, (size_t)views[i].len);
        out += views[i].len;
    }
    Py_END_ALLOW_THREADS
    result = PyLong_FromSsize_t(end);
done:
    for (Py_ssize_t i = 0; i < held; i++) PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    PyBuffer_Release(&dest);
    return result;
}

static PyMethodDef module_methods[] = {
    {"gather", (PyCFunction)(void (*)(void))gather, METH_FASTCALL,
     "gather(dest, pos, buffers) -> pos after them: copied back to back without the GIL"},
    {"pull_ack_frame", (PyCFunction)(void (*)(void))pull_ack_frame, METH_FASTCALL,
     "pull_ack_frame(buf, pos) -> (largest, delay_us, ranges, next pos)"},
    {"send_batch", send_batch, METH_VARARGS,
     "send_batch(fd, datagrams, addr, gso) -> (datagrams sent, calls): sendmmsg, UDP GSO"},
    {"set_malformed", set_malformed, METH_O,
     "set_malformed(factory): factory(message) -> the exception for malformed frames"},
    {NULL}};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_fast", "The compiled per-packet path of the data channel.", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__fast(void) {
    if (PyType_Ready(&AeadType) < 0 || PyType_Ready(&RangeSetType) < 0
        || PyType_Ready(&ReceiverType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (!m) return NULL;
    malformed_error = Py_NewRef(PyExc_ValueError);
    if (PyModule_AddObjectRef(m, "Aead", (PyObject *)&AeadType) < 0
        || PyModule_AddObjectRef(m, "RangeSet", (PyObject *)&RangeSetType) < 0
        || PyModule_AddObjectRef(m, "BatchReceiver", (PyObject *)&ReceiverType) < 0
        || PyModule_AddStringConstant(m, "OPENSSL_VERSION", OpenSSL_version(OPENSSL_VERSION)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
