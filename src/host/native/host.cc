// virtio-mq host layer: a small, context-aware Node addon (plain V8 + node.h).
//
// What lives here and why it is native:
//  * SharedArrayBuffers over external mmap()s (memfd / vhost-user memory fds).
//    Node 20's N-API cannot create an SAB over foreign memory; V8's
//    SharedArrayBuffer::NewBackingStore(data, len, deleter, ...) can.  The
//    mapping is released ONLY by the backing store's deleter, i.e. when the
//    last JS view in any isolate is gone (munmap while a view can still reach
//    the region would kill the process).
//  * eventfd, poll(2) (meant to block inside worker threads), unix stream
//    sockets with SCM_RIGHTS, TUN/TAP ioctls.
//  * Batched frame I/O between an SAB and an fd: one readv/writev per frame
//    (a TAP fd takes exactly one frame per read/write), so the frame bytes
//    never get copied into JS.
//
// Errors: syscall failures throw an instance of the HostError class that the
// TS wrapper registers via setErrorClass(); it is constructed as
// `new HostError(syscall, errno, detail?, code?, text?)` with a positive errno
// (code/text from glibc's strerrorname_np/strerrordesc_np).  Argument
// errors throw TypeError / RangeError.  Nothing here ever throws for EAGAIN:
// those calls return null / false / a short count instead.
//
// The module is context-aware (NODE_MODULE_INIT) so it loads in any number of
// worker threads; per-instance state (the error class) lives in an AddonData
// object freed by an environment cleanup hook.

#include <node.h>
#include <node_buffer.h>
#include <v8.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

namespace vmq_host {

using v8::Array;
using v8::ArrayBuffer;
using v8::BackingStore;
using v8::Context;
using v8::Exception;
using v8::External;
using v8::Float64Array;
using v8::Function;
using v8::FunctionCallbackInfo;
using v8::FunctionTemplate;
using v8::Global;
using v8::Int32Array;
using v8::Integer;
using v8::Isolate;
using v8::Local;
using v8::MaybeLocal;
using v8::Null;
using v8::Number;
using v8::Object;
using v8::SharedArrayBuffer;
using v8::String;
using v8::TypedArray;
using v8::Uint16Array;
using v8::Uint32Array;
using v8::Value;

// SCM_MAX_FD in the kernel.
constexpr int kMaxFdsPerMsg = 253;
// Linux IOV_MAX.
constexpr uint32_t kMaxSegsPerFrame = 1024;
// Largest integer a double holds exactly.
constexpr double kMaxSafeInteger = 9007199254740991.0;

struct AddonData {
  Global<Function> error_ctor;
  static void Cleanup(void* arg) { delete static_cast<AddonData*>(arg); }
};

// ---------------------------------------------------------------------------
// Error helpers

static Local<String> Str(Isolate* isolate, const char* s) {
  return String::NewFromUtf8(isolate, s).ToLocalChecked();
}

static void ThrowErrno(const FunctionCallbackInfo<Value>& info, const char* syscall, int err,
                       const char* detail = nullptr) {
  Isolate* isolate = info.GetIsolate();
  Local<Context> context = isolate->GetCurrentContext();
  auto* data = static_cast<AddonData*>(info.Data().As<External>()->Value());
  const char* code = nullptr;
  const char* text = nullptr;
#ifdef __GLIBC__
#if __GLIBC_PREREQ(2, 32)
  code = strerrorname_np(err);  // thread-safe, static strings
  text = strerrordesc_np(err);
#endif
#endif
  if (!data->error_ctor.IsEmpty()) {
    auto opt = [&](const char* s) -> Local<Value> {
      return s ? Local<Value>(Str(isolate, s)) : Local<Value>(v8::Undefined(isolate));
    };
    Local<Value> argv[5] = {Str(isolate, syscall), Integer::New(isolate, err), opt(detail), opt(code),
                            opt(text)};
    Local<Object> obj;
    if (data->error_ctor.Get(isolate)->NewInstance(context, 5, argv).ToLocal(&obj)) {
      isolate->ThrowException(obj);
    }
    // else: the constructor itself threw; that exception is already pending.
    return;
  }
  // Fallback before setErrorClass(): node's own errno exception (errno/code/syscall set).
  isolate->ThrowException(node::ErrnoException(isolate, err, syscall, detail));
}

static void ThrowType(Isolate* isolate, const std::string& msg) {
  isolate->ThrowException(Exception::TypeError(Str(isolate, msg.c_str())));
}

static void ThrowRange(Isolate* isolate, const std::string& msg) {
  isolate->ThrowException(Exception::RangeError(Str(isolate, msg.c_str())));
}

// ---------------------------------------------------------------------------
// Argument helpers (each returns false after throwing)

static bool ArgFd(const FunctionCallbackInfo<Value>& info, int i, int* out) {
  if (!info[i]->IsInt32()) {
    ThrowType(info.GetIsolate(), "argument " + std::to_string(i) + " (fd) must be an int32");
    return false;
  }
  *out = info[i].As<v8::Int32>()->Value();
  return true;
}

static bool ArgInt(const FunctionCallbackInfo<Value>& info, int i, const char* what, int64_t lo,
                   int64_t hi, int64_t* out) {
  if (!info[i]->IsNumber()) {
    ThrowType(info.GetIsolate(), std::string(what) + " must be a number");
    return false;
  }
  double d = info[i].As<Number>()->Value();
  if (!std::isfinite(d) || std::floor(d) != d || d < static_cast<double>(lo) ||
      d > static_cast<double>(hi)) {
    ThrowRange(info.GetIsolate(), std::string(what) + " must be an integer in [" +
                                      std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return false;
  }
  *out = static_cast<int64_t>(d);
  return true;
}

static bool ArgBool(const FunctionCallbackInfo<Value>& info, int i) {
  return info[i]->IsTrue();
}

static bool ArgString(const FunctionCallbackInfo<Value>& info, int i, const char* what,
                      std::string* out) {
  if (!info[i]->IsString()) {
    ThrowType(info.GetIsolate(), std::string(what) + " must be a string");
    return false;
  }
  String::Utf8Value v(info.GetIsolate(), info[i]);
  out->assign(*v, v.length());
  if (out->find('\0') != std::string::npos) {
    ThrowType(info.GetIsolate(), std::string(what) + " must not contain NUL");
    return false;
  }
  return true;
}

// Raw pointer to a typed array's first element (works for views over
// ArrayBuffer and SharedArrayBuffer).
template <typename T>
static T* ViewData(Local<TypedArray> ta) {
  return reinterpret_cast<T*>(static_cast<char*>(ta->Buffer()->Data()) + ta->ByteOffset());
}

// An (Shared)ArrayBuffer argument: base pointer + byte length.
static bool ArgBuffer(const FunctionCallbackInfo<Value>& info, int i, char** base, size_t* len) {
  if (info[i]->IsSharedArrayBuffer()) {
    Local<SharedArrayBuffer> sab = info[i].As<SharedArrayBuffer>();
    *base = static_cast<char*>(sab->Data());
    *len = sab->ByteLength();
    return true;
  }
  if (info[i]->IsArrayBuffer()) {
    Local<ArrayBuffer> ab = info[i].As<ArrayBuffer>();
    *base = static_cast<char*>(ab->Data());
    *len = ab->ByteLength();
    return true;
  }
  ThrowType(info.GetIsolate(), "argument " + std::to_string(i) +
                                   " must be a SharedArrayBuffer (or ArrayBuffer)");
  return false;
}

static bool ArgFloat64Array(const FunctionCallbackInfo<Value>& info, int i, const char* what,
                            size_t need, double** out) {
  if (!info[i]->IsFloat64Array()) {
    ThrowType(info.GetIsolate(), std::string(what) + " must be a Float64Array");
    return false;
  }
  Local<Float64Array> ta = info[i].As<Float64Array>();
  if (ta->Length() < need) {
    ThrowRange(info.GetIsolate(), std::string(what) + " is shorter than needed (" +
                                      std::to_string(ta->Length()) + " < " +
                                      std::to_string(need) + ")");
    return false;
  }
  *out = need ? ViewData<double>(ta) : nullptr;
  return true;
}

static bool ArgUint32Array(const FunctionCallbackInfo<Value>& info, int i, const char* what,
                           size_t need, uint32_t** out) {
  if (!info[i]->IsUint32Array()) {
    ThrowType(info.GetIsolate(), std::string(what) + " must be a Uint32Array");
    return false;
  }
  Local<Uint32Array> ta = info[i].As<Uint32Array>();
  if (ta->Length() < need) {
    ThrowRange(info.GetIsolate(), std::string(what) + " is shorter than needed (" +
                                      std::to_string(ta->Length()) + " < " +
                                      std::to_string(need) + ")");
    return false;
  }
  *out = need ? ViewData<uint32_t>(ta) : nullptr;
  return true;
}

// ---------------------------------------------------------------------------
// setErrorClass(ctor)

static void SetErrorClass(const FunctionCallbackInfo<Value>& info) {
  auto* data = static_cast<AddonData*>(info.Data().As<External>()->Value());
  if (!info[0]->IsFunction()) return ThrowType(info.GetIsolate(), "ctor must be a function");
  data->error_ctor.Reset(info.GetIsolate(), info[0].As<Function>());
}

// ---------------------------------------------------------------------------
// memfd / mmap / close

// memfdCreate(name, size) -> fd
static void MemfdCreate(const FunctionCallbackInfo<Value>& info) {
  std::string name;
  int64_t size;
  if (!ArgString(info, 0, "name", &name)) return;
  if (!ArgInt(info, 1, "size", 0, static_cast<int64_t>(kMaxSafeInteger), &size)) return;
  int fd = memfd_create(name.c_str(), MFD_CLOEXEC);
  if (fd < 0) return ThrowErrno(info, "memfd_create", errno);
  if (ftruncate(fd, static_cast<off_t>(size)) != 0) {
    int err = errno;
    close(fd);
    return ThrowErrno(info, "ftruncate", err);
  }
  info.GetReturnValue().Set(fd);
}

// ---------------------------------------------------------------------------
// Guest mappings and SIGBUS
//
// Every mmapShared() mapping is registered here (page-aligned base, length).
// A front-end may shrink the file under a mapping (ftruncate a memfd after
// SET_MEM_TABLE); touching a page past the new end raises SIGBUS, which
// would kill the process.  The SIGBUS handler (SA_SIGINFO) looks si_addr up
// in this registry: inside a guest mapping, it maps an anonymous zero page
// over the faulting page (MAP_FIXED) so the access completes, and counts the
// fault on the mapping, which the session polls (guestMappingFaults) to
// report the region and drop that front-end.  Any other SIGBUS gets the
// previous disposition (the default: terminate with a core).  The registry
// is a fixed array of atomics so the handler can read it without locks;
// writers serialise on a mutex.

namespace {
constexpr int kMaxMappings = 4096;
struct MapSlot {
  std::atomic<uintptr_t> base{0};
  std::atomic<size_t> len{0};
  std::atomic<uint32_t> faults{0};
};
MapSlot g_maps[kMaxMappings];
pthread_mutex_t g_maps_lock = PTHREAD_MUTEX_INITIALIZER;
struct sigaction g_old_sigbus;
std::atomic<bool> g_sigbus_installed{false};
uintptr_t g_page = 4096;

void RegisterMapping(uintptr_t base, size_t len) {
  pthread_mutex_lock(&g_maps_lock);
  for (int i = 0; i < kMaxMappings; i++) {
    if (g_maps[i].base.load(std::memory_order_relaxed) == 0) {
      g_maps[i].faults.store(0, std::memory_order_relaxed);
      g_maps[i].len.store(len, std::memory_order_relaxed);
      g_maps[i].base.store(base, std::memory_order_release);
      break;
    }
  }
  // More than kMaxMappings live mappings: the extra ones are not protected.
  pthread_mutex_unlock(&g_maps_lock);
}

void UnregisterMapping(uintptr_t base) {
  pthread_mutex_lock(&g_maps_lock);
  for (int i = 0; i < kMaxMappings; i++) {
    if (g_maps[i].base.load(std::memory_order_relaxed) == base) {
      g_maps[i].base.store(0, std::memory_order_release);
      g_maps[i].len.store(0, std::memory_order_relaxed);
      break;
    }
  }
  pthread_mutex_unlock(&g_maps_lock);
}

MapSlot* FindMapping(uintptr_t addr) {
  for (int i = 0; i < kMaxMappings; i++) {
    uintptr_t b = g_maps[i].base.load(std::memory_order_acquire);
    if (b == 0) continue;
    size_t l = g_maps[i].len.load(std::memory_order_relaxed);
    if (addr >= b && addr - b < l) return &g_maps[i];
  }
  return nullptr;
}

void SigbusHandler(int sig, siginfo_t* si, void* uctx) {
  uintptr_t a = reinterpret_cast<uintptr_t>(si->si_addr);
  if (si->si_code > 0) {  // raised by a memory access (not kill/tgkill)
    MapSlot* m = FindMapping(a);
    if (m != nullptr) {
      void* page = reinterpret_cast<void*>(a & ~(g_page - 1));
      if (mmap(page, g_page, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) != MAP_FAILED) {
        m->faults.fetch_add(1, std::memory_order_relaxed);
        return;  // the access is retried on the zero page
      }
    }
  }
  // Not a guest mapping: whatever was there before us.
  if ((g_old_sigbus.sa_flags & SA_SIGINFO) != 0 && g_old_sigbus.sa_sigaction != nullptr) {
    g_old_sigbus.sa_sigaction(sig, si, uctx);
    return;
  }
  if (g_old_sigbus.sa_handler != SIG_DFL && g_old_sigbus.sa_handler != SIG_IGN && g_old_sigbus.sa_handler != nullptr) {
    g_old_sigbus.sa_handler(sig);
    return;
  }
  signal(SIGBUS, SIG_DFL);  // returning re-executes the access: default action
  if (si->si_code <= 0) raise(SIGBUS);
}

void InstallSigbusHandler() {
  bool expected = false;
  if (!g_sigbus_installed.compare_exchange_strong(expected, true)) return;
  g_page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = SigbusHandler;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, &g_old_sigbus);
}

/** The registered mapping under an SAB made by mmapShared, or nullptr. */
MapSlot* MappingOf(Local<Value> v, uintptr_t* base_out, size_t* len_out) {
  if (!v->IsSharedArrayBuffer()) return nullptr;
  std::shared_ptr<BackingStore> bs = v.As<SharedArrayBuffer>()->GetBackingStore();
  uintptr_t data = reinterpret_cast<uintptr_t>(bs->Data());
  if (data == 0) return nullptr;
  uintptr_t base = data & ~(g_page - 1);
  pthread_mutex_lock(&g_maps_lock);
  MapSlot* found = nullptr;
  for (int i = 0; i < kMaxMappings; i++) {
    if (g_maps[i].base.load(std::memory_order_relaxed) == base) {
      found = &g_maps[i];
      *base_out = base;
      *len_out = g_maps[i].len.load(std::memory_order_relaxed);
      break;
    }
  }
  pthread_mutex_unlock(&g_maps_lock);
  return found;
}
}  // namespace

// guestMappingFaults(sab) -> number of SIGBUS faults absorbed in the mapping under `sab` (0 if none or not a mapping)
static void GuestMappingFaults(const FunctionCallbackInfo<Value>& info) {
  uintptr_t base;
  size_t len;
  MapSlot* m = info.Length() > 0 ? MappingOf(info[0], &base, &len) : nullptr;
  info.GetReturnValue().Set(m == nullptr ? 0 : static_cast<double>(m->faults.load(std::memory_order_relaxed)));
}

// releaseShared(sab) -> boolean: replace the whole mapping under `sab` by
// anonymous zero pages, dropping its file pages (and the file's last
// reference, if the front-end closed it) now instead of at GC; the SAB stays
// valid memory (reads 0).  False when `sab` is no mmapShared mapping.
static void ReleaseShared(const FunctionCallbackInfo<Value>& info) {
  uintptr_t base;
  size_t len;
  MapSlot* m = info.Length() > 0 ? MappingOf(info[0], &base, &len) : nullptr;
  if (m == nullptr) return info.GetReturnValue().Set(false);
  void* r = mmap(reinterpret_cast<void*>(base), len, PROT_READ | PROT_WRITE,
                 MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (r == MAP_FAILED) return ThrowErrno(info, "mmap", errno);
  info.GetReturnValue().Set(true);
}

// The SAB's data pointer is `base + delta`, where `delta` is the distance from
// the page-aligned file offset to the requested one; deleter_data carries
// delta, so no allocation is needed.  May run on any thread (V8 frees backing
// stores from GC / sweeper threads): only munmap here, never touch V8.
static void UnmapDeleter(void* data, size_t length, void* deleter_data) {
  uintptr_t delta = reinterpret_cast<uintptr_t>(deleter_data);
  UnregisterMapping(reinterpret_cast<uintptr_t>(data) - delta);
  munmap(static_cast<char*>(data) - delta, length + delta);
}

// mmapShared(fd, size, offset, populate) -> SharedArrayBuffer
static void MmapShared(const FunctionCallbackInfo<Value>& info) {
  Isolate* isolate = info.GetIsolate();
  int fd;
  int64_t size, offset;
  if (!ArgFd(info, 0, &fd)) return;
  if (!ArgInt(info, 1, "size", 1, static_cast<int64_t>(kMaxSafeInteger), &size)) return;
  if (!ArgInt(info, 2, "offset", 0, static_cast<int64_t>(kMaxSafeInteger), &offset)) return;
  bool populate = ArgBool(info, 3);
  // Refuse ranges past the end of a regular file (memfd, hugetlbfs, tmpfs):
  // touching such pages would SIGBUS the whole process.
  struct stat st;
  if (fstat(fd, &st) != 0) return ThrowErrno(info, "fstat", errno);
  if (S_ISREG(st.st_mode) && (offset > st.st_size || size > st.st_size - offset))
    return ThrowRange(isolate, "mmap range [" + std::to_string(offset) + ", " +
                                   std::to_string(offset + size) + ") is beyond the end of the file (" +
                                   std::to_string(st.st_size) + " bytes)");
  const int64_t page = sysconf(_SC_PAGESIZE);
  const int64_t aligned = offset & ~(page - 1);
  const uintptr_t delta = static_cast<uintptr_t>(offset - aligned);
  const size_t map_len = static_cast<size_t>(size) + delta;
  void* base = mmap(nullptr, map_len, PROT_READ | PROT_WRITE,
                    MAP_SHARED | (populate ? MAP_POPULATE : 0), fd, static_cast<off_t>(aligned));
  if (base == MAP_FAILED) return ThrowErrno(info, "mmap", errno);
  char* data = static_cast<char*>(base) + delta;
  RegisterMapping(reinterpret_cast<uintptr_t>(base), map_len);
  std::unique_ptr<BackingStore> store = SharedArrayBuffer::NewBackingStore(
      data, static_cast<size_t>(size), UnmapDeleter, reinterpret_cast<void*>(delta));
  // From here on the backing store owns the mapping.
  Local<SharedArrayBuffer> sab = SharedArrayBuffer::New(isolate, std::move(store));
  info.GetReturnValue().Set(sab);
}

// close(fd)
static void Close(const FunctionCallbackInfo<Value>& info) {
  int fd;
  if (!ArgFd(info, 0, &fd)) return;
  // Linux: the fd is released even when close() reports EINTR; never retry.
  if (close(fd) != 0 && errno != EINTR) return ThrowErrno(info, "close", errno);
}

// setNonblock(fd, on)
static void SetNonblock(const FunctionCallbackInfo<Value>& info) {
  int fd;
  if (!ArgFd(info, 0, &fd)) return;
  bool on = info[1]->IsUndefined() ? true : ArgBool(info, 1);
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return ThrowErrno(info, "fcntl", errno);
  int nfl = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
  if (nfl != fl && fcntl(fd, F_SETFL, nfl) < 0) return ThrowErrno(info, "fcntl", errno);
}

// ---------------------------------------------------------------------------
// eventfd

// eventfdCreate(initval, nonblock, semaphore) -> fd
static void EventfdCreate(const FunctionCallbackInfo<Value>& info) {
  int64_t initval;
  if (!ArgInt(info, 0, "initval", 0, 0xffffffffLL, &initval)) return;
  int flags = EFD_CLOEXEC;
  if (ArgBool(info, 1)) flags |= EFD_NONBLOCK;
  if (ArgBool(info, 2)) flags |= EFD_SEMAPHORE;
  int fd = eventfd(static_cast<unsigned int>(initval), flags);
  if (fd < 0) return ThrowErrno(info, "eventfd", errno);
  info.GetReturnValue().Set(fd);
}

// eventfdRead(fd) -> number | null (EAGAIN)
static void EventfdRead(const FunctionCallbackInfo<Value>& info) {
  int fd;
  if (!ArgFd(info, 0, &fd)) return;
  uint64_t v;
  ssize_t n;
  do n = read(fd, &v, sizeof v); while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return info.GetReturnValue().SetNull();
    return ThrowErrno(info, "read", errno);
  }
  if (n != sizeof v) return ThrowErrno(info, "read", EIO, "short eventfd read");
  info.GetReturnValue().Set(static_cast<double>(v));
}

// eventfdWrite(fd, value) -> true | false (EAGAIN: counter would overflow)
static void EventfdWrite(const FunctionCallbackInfo<Value>& info) {
  int fd;
  int64_t value;
  if (!ArgFd(info, 0, &fd)) return;
  if (!ArgInt(info, 1, "value", 1, static_cast<int64_t>(kMaxSafeInteger), &value)) return;
  uint64_t v = static_cast<uint64_t>(value);
  ssize_t n;
  do n = write(fd, &v, sizeof v); while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return info.GetReturnValue().Set(false);
    return ThrowErrno(info, "write", errno);
  }
  info.GetReturnValue().Set(true);
}

// ---------------------------------------------------------------------------
// poll

static int64_t NowMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// poll(fds: Int32Array, timeoutMs, events: number | Uint16Array, revents: Uint16Array) -> count
// Blocks the calling thread (meant for worker threads).  EINTR is retried with
// the remaining timeout.
static void Poll(const FunctionCallbackInfo<Value>& info) {
  Isolate* isolate = info.GetIsolate();
  if (!info[0]->IsInt32Array()) return ThrowType(isolate, "fds must be an Int32Array");
  Local<Int32Array> fds_ta = info[0].As<Int32Array>();
  const size_t n = fds_ta->Length();
  int64_t timeout;
  if (!ArgInt(info, 1, "timeoutMs", -1, INT32_MAX, &timeout)) return;
  if (!info[3]->IsUint16Array() || info[3].As<Uint16Array>()->Length() < n)
    return ThrowType(isolate, "revents must be a Uint16Array with at least fds.length entries");
  const uint16_t* events_arr = nullptr;
  short events_all = POLLIN;
  if (info[2]->IsUint16Array()) {
    if (info[2].As<Uint16Array>()->Length() < n)
      return ThrowRange(isolate, "events is shorter than fds");
    events_arr = n ? ViewData<uint16_t>(info[2].As<TypedArray>()) : nullptr;
  } else if (info[2]->IsNumber()) {
    int64_t ev;
    if (!ArgInt(info, 2, "events", 0, 0xffff, &ev)) return;
    events_all = static_cast<short>(ev);
  } else if (!info[2]->IsUndefined()) {
    return ThrowType(isolate, "events must be a number or a Uint16Array");
  }
  const int32_t* fds = n ? ViewData<int32_t>(fds_ta) : nullptr;
  uint16_t* revents = n ? ViewData<uint16_t>(info[3].As<TypedArray>()) : nullptr;

  struct pollfd stack_pfds[16];
  std::vector<struct pollfd> heap_pfds;
  struct pollfd* pfds = stack_pfds;
  if (n > 16) {
    heap_pfds.resize(n);
    pfds = heap_pfds.data();
  }
  for (size_t i = 0; i < n; i++) {
    pfds[i].fd = fds[i];
    pfds[i].events = events_arr ? static_cast<short>(events_arr[i]) : events_all;
    pfds[i].revents = 0;
  }
  const int64_t deadline = timeout > 0 ? NowMs() + timeout : 0;
  int r;
  for (;;) {
    int t = static_cast<int>(timeout);
    if (timeout > 0) {
      int64_t left = deadline - NowMs();
      t = left > 0 ? static_cast<int>(left) : 0;
    }
    r = poll(pfds, static_cast<nfds_t>(n), t);
    if (r >= 0 || errno != EINTR) break;
  }
  if (r < 0) return ThrowErrno(info, "poll", errno);
  for (size_t i = 0; i < n; i++) revents[i] = static_cast<uint16_t>(pfds[i].revents);
  info.GetReturnValue().Set(r);
}

// ---------------------------------------------------------------------------
// unix stream sockets

static bool FillSockaddr(const FunctionCallbackInfo<Value>& info, const std::string& path,
                         struct sockaddr_un* sa, socklen_t* len) {
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof sa->sun_path) {
    ThrowRange(info.GetIsolate(), "unix socket path must be 1.." +
                                      std::to_string(sizeof sa->sun_path - 1) + " bytes");
    return false;
  }
  memcpy(sa->sun_path, path.data(), path.size());
  *len = static_cast<socklen_t>(offsetof(struct sockaddr_un, sun_path) + path.size() + 1);
  return true;
}

// unixListen(path, backlog, mode, nonblock) -> fd
// bind -> chmod(mode) -> listen: nobody can connect before the mode is set
// (connect() to a bound-but-not-listening socket is refused).
static void UnixListen(const FunctionCallbackInfo<Value>& info) {
  std::string path;
  int64_t backlog, mode;
  if (!ArgString(info, 0, "path", &path)) return;
  if (!ArgInt(info, 1, "backlog", 1, 65535, &backlog)) return;
  if (!ArgInt(info, 2, "mode", 0, 07777, &mode)) return;
  bool nonblock = ArgBool(info, 3);
  struct sockaddr_un sa;
  socklen_t salen;
  if (!FillSockaddr(info, path, &sa, &salen)) return;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
  if (fd < 0) return ThrowErrno(info, "socket", errno);
  const char* sc = nullptr;
  int err = 0;
  if (bind(fd, reinterpret_cast<struct sockaddr*>(&sa), salen) != 0) {
    sc = "bind";
    err = errno;
  } else if (chmod(path.c_str(), static_cast<mode_t>(mode)) != 0) {
    sc = "chmod";
    err = errno;
    unlink(path.c_str());
  } else if (listen(fd, static_cast<int>(backlog)) != 0) {
    sc = "listen";
    err = errno;
    unlink(path.c_str());
  }
  if (sc) {
    close(fd);
    return ThrowErrno(info, sc, err, path.c_str());
  }
  info.GetReturnValue().Set(fd);
}

// unixAccept(fd, nonblock) -> fd | null (EAGAIN)
static void UnixAccept(const FunctionCallbackInfo<Value>& info) {
  int fd;
  if (!ArgFd(info, 0, &fd)) return;
  int flags = SOCK_CLOEXEC | (ArgBool(info, 1) ? SOCK_NONBLOCK : 0);
  int c;
  do c = accept4(fd, nullptr, nullptr, flags); while (c < 0 && errno == EINTR);
  if (c < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return info.GetReturnValue().SetNull();
    return ThrowErrno(info, "accept4", errno);
  }
  info.GetReturnValue().Set(c);
}

// unixConnect(path, nonblock) -> fd   (the connect itself is blocking)
static void UnixConnect(const FunctionCallbackInfo<Value>& info) {
  std::string path;
  if (!ArgString(info, 0, "path", &path)) return;
  bool nonblock = ArgBool(info, 1);
  struct sockaddr_un sa;
  socklen_t salen;
  if (!FillSockaddr(info, path, &sa, &salen)) return;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ThrowErrno(info, "socket", errno);
  int r;
  do r = connect(fd, reinterpret_cast<struct sockaddr*>(&sa), salen); while (r < 0 && errno == EINTR);
  if (r != 0) {
    int err = errno;
    close(fd);
    return ThrowErrno(info, "connect", err, path.c_str());
  }
  if (nonblock) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
      int err = errno;
      close(fd);
      return ThrowErrno(info, "fcntl", err);
    }
  }
  info.GetReturnValue().Set(fd);
}

// socketpair(nonblock) -> [fd, fd]   (AF_UNIX, SOCK_STREAM)
static void SocketPair(const FunctionCallbackInfo<Value>& info) {
  Isolate* isolate = info.GetIsolate();
  int sv[2];
  int type = SOCK_STREAM | SOCK_CLOEXEC | (ArgBool(info, 0) ? SOCK_NONBLOCK : 0);
  if (socketpair(AF_UNIX, type, 0, sv) != 0) return ThrowErrno(info, "socketpair", errno);
  Local<Value> elems[2] = {Integer::New(isolate, sv[0]), Integer::New(isolate, sv[1])};
  info.GetReturnValue().Set(Array::New(isolate, elems, 2));
}

// sendmsg(fd, data: ArrayBufferView, fds?: number[] | Int32Array) -> bytes sent | null (EAGAIN)
// The fds ride on the first byte, so data must be non-empty when fds are given.
// MSG_NOSIGNAL: a closed peer gives EPIPE, not SIGPIPE.
static void SendMsg(const FunctionCallbackInfo<Value>& info) {
  Isolate* isolate = info.GetIsolate();
  Local<Context> context = isolate->GetCurrentContext();
  int fd;
  if (!ArgFd(info, 0, &fd)) return;
  if (!info[1]->IsArrayBufferView()) return ThrowType(isolate, "data must be a Buffer/Uint8Array");
  Local<v8::ArrayBufferView> view = info[1].As<v8::ArrayBufferView>();
  size_t len = view->ByteLength();
  char* bytes = len ? static_cast<char*>(view->Buffer()->Data()) + view->ByteOffset() : nullptr;

  std::vector<int> fds;
  if (info[2]->IsInt32Array()) {
    Local<Int32Array> ta = info[2].As<Int32Array>();
    fds.resize(ta->Length());
    if (!fds.empty()) ta->CopyContents(fds.data(), fds.size() * sizeof(int));
  } else if (info[2]->IsArray()) {
    Local<Array> arr = info[2].As<Array>();
    fds.resize(arr->Length());
    for (uint32_t i = 0; i < arr->Length(); i++) {
      Local<Value> v;
      if (!arr->Get(context, i).ToLocal(&v)) return;
      if (!v->IsInt32()) return ThrowType(isolate, "fds must contain int32 values");
      fds[i] = v.As<v8::Int32>()->Value();
    }
  } else if (!info[2]->IsUndefined() && !info[2]->IsNull()) {
    return ThrowType(isolate, "fds must be an array of numbers or an Int32Array");
  }
  if (fds.size() > static_cast<size_t>(kMaxFdsPerMsg))
    return ThrowRange(isolate, "at most 253 fds per message");
  if (!fds.empty() && len == 0)
    return ThrowRange(isolate, "fds need at least one data byte to ride on");

  struct iovec iov = {bytes, len};
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> cbuf;
  if (!fds.empty()) {
    cbuf.assign(CMSG_SPACE(fds.size() * sizeof(int)), 0);
    msg.msg_control = cbuf.data();
    msg.msg_controllen = cbuf.size();
    struct cmsghdr* cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
    memcpy(CMSG_DATA(cm), fds.data(), fds.size() * sizeof(int));
  }
  ssize_t n;
  do n = sendmsg(fd, &msg, MSG_NOSIGNAL); while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return info.GetReturnValue().SetNull();
    return ThrowErrno(info, "sendmsg", errno);
  }
  info.GetReturnValue().Set(static_cast<double>(n));
}

// recvmsg(fd, maxBytes, maxFds) -> { bytes: Buffer, fds: number[] } | null (EAGAIN)
// bytes.length === 0 means EOF.  Received fds are O_CLOEXEC.  If the control
// data was truncated (more fds than maxFds) every fd that did arrive is closed
// and a HostError(EMSGSIZE) is thrown: the data bytes of that message are lost,
// so the stream must be considered broken.
static void RecvMsg(const FunctionCallbackInfo<Value>& info) {
  Isolate* isolate = info.GetIsolate();
  Local<Context> context = isolate->GetCurrentContext();
  int fd;
  int64_t max_bytes, max_fds;
  if (!ArgFd(info, 0, &fd)) return;
  if (!ArgInt(info, 1, "maxBytes", 1, 1 << 30, &max_bytes)) return;
  if (!ArgInt(info, 2, "maxFds", 0, kMaxFdsPerMsg, &max_fds)) return;

  std::unique_ptr<char[]> buf(new char[static_cast<size_t>(max_bytes)]);
  struct iovec iov = {buf.get(), static_cast<size_t>(max_bytes)};
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> cbuf;
  if (max_fds > 0) {
    cbuf.assign(CMSG_SPACE(static_cast<size_t>(max_fds) * sizeof(int)), 0);
    msg.msg_control = cbuf.data();
    msg.msg_controllen = cbuf.size();
  }
  ssize_t n;
  do n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC); while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return info.GetReturnValue().SetNull();
    return ThrowErrno(info, "recvmsg", errno);
  }
  std::vector<int> fds;
  if (msg.msg_controllen > 0) {
    for (struct cmsghdr* cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
      if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
      size_t cnt = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      const unsigned char* p = CMSG_DATA(cm);
      for (size_t i = 0; i < cnt; i++) {
        int f;
        memcpy(&f, p + i * sizeof(int), sizeof(int));
        fds.push_back(f);
      }
    }
  }
  if (msg.msg_flags & MSG_CTRUNC) {
    for (int f : fds) close(f);
    return ThrowErrno(info, "recvmsg", EMSGSIZE,
                      "control data truncated (MSG_CTRUNC): more fds than maxFds; received fds closed");
  }
  Local<Object> bytes;
  if (!node::Buffer::Copy(isolate, buf.get(), static_cast<size_t>(n)).ToLocal(&bytes)) {
    for (int f : fds) close(f);
    return;
  }
  std::vector<Local<Value>> fd_vals;
  fd_vals.reserve(fds.size());
  for (int f : fds) fd_vals.push_back(Integer::New(isolate, f));
  Local<Array> fd_arr = Array::New(isolate, fd_vals.data(), fd_vals.size());
  Local<Object> result = Object::New(isolate);
  if (result->Set(context, Str(isolate, "bytes"), bytes).IsNothing() ||
      result->Set(context, Str(isolate, "fds"), fd_arr).IsNothing()) {
    for (int f : fds) close(f);
    return;
  }
  info.GetReturnValue().Set(result);
}

// ---------------------------------------------------------------------------
// TUN/TAP

static bool FillIfName(const FunctionCallbackInfo<Value>& info, int arg, struct ifreq* ifr) {
  std::string name;
  if (!ArgString(info, arg, "name", &name)) return false;
  if (name.size() >= IFNAMSIZ) {
    ThrowRange(info.GetIsolate(), "interface name must be at most " +
                                      std::to_string(IFNAMSIZ - 1) + " bytes");
    return false;
  }
  memcpy(ifr->ifr_name, name.data(), name.size());
  return true;
}

// tunOpen(name, multiQueue, vnetHdr, nonblock) -> { fd, name }
static void TunOpen(const FunctionCallbackInfo<Value>& info) {
  Isolate* isolate = info.GetIsolate();
  Local<Context> context = isolate->GetCurrentContext();
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  if (!FillIfName(info, 0, &ifr)) return;
  short flags = IFF_TAP | IFF_NO_PI;
  if (ArgBool(info, 1)) flags |= IFF_MULTI_QUEUE;
  if (ArgBool(info, 2)) flags |= IFF_VNET_HDR;
  ifr.ifr_flags = flags;
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | (ArgBool(info, 3) ? O_NONBLOCK : 0));
  if (fd < 0) return ThrowErrno(info, "open", errno, "/dev/net/tun");
  if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
    int err = errno;
    close(fd);
    return ThrowErrno(info, "ioctl", err, "TUNSETIFF");
  }
  char name[IFNAMSIZ + 1];
  memcpy(name, ifr.ifr_name, IFNAMSIZ);
  name[IFNAMSIZ] = 0;
  Local<Object> result = Object::New(isolate);
  if (result->Set(context, Str(isolate, "fd"), Integer::New(isolate, fd)).IsNothing() ||
      result->Set(context, Str(isolate, "name"), Str(isolate, name)).IsNothing()) {
    close(fd);
    return;
  }
  info.GetReturnValue().Set(result);
}

// tunSetVnetHdrSize(fd, size): TUNSETVNETHDRSZ takes a pointer to int.
static void TunSetVnetHdrSize(const FunctionCallbackInfo<Value>& info) {
  int fd;
  int64_t size;
  if (!ArgFd(info, 0, &fd)) return;
  if (!ArgInt(info, 1, "size", 0, INT32_MAX, &size)) return;
  int sz = static_cast<int>(size);
  if (ioctl(fd, TUNSETVNETHDRSZ, &sz) != 0) return ThrowErrno(info, "ioctl", errno, "TUNSETVNETHDRSZ");
}

// tunSetOffload(fd, flags): TUNSETOFFLOAD takes its argument by value.
static void TunSetOffload(const FunctionCallbackInfo<Value>& info) {
  int fd;
  int64_t flags;
  if (!ArgFd(info, 0, &fd)) return;
  if (!ArgInt(info, 1, "flags", 0, 0xffffffffLL, &flags)) return;
  if (ioctl(fd, TUNSETOFFLOAD, static_cast<unsigned long>(flags)) != 0)
    return ThrowErrno(info, "ioctl", errno, "TUNSETOFFLOAD");
}

// tunSetQueue(fd, attach)
static void TunSetQueue(const FunctionCallbackInfo<Value>& info) {
  int fd;
  if (!ArgFd(info, 0, &fd)) return;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = ArgBool(info, 1) ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE;
  if (ioctl(fd, TUNSETQUEUE, &ifr) != 0) return ThrowErrno(info, "ioctl", errno, "TUNSETQUEUE");
}

#ifndef TUNSETCARRIER
#define TUNSETCARRIER _IOW('T', 226, int)  // Linux >= 4.19
#endif

// tunSetCarrier(fd, on): TUNSETCARRIER takes a pointer to int; the TAP's carrier (NO-CARRIER when off).
static void TunSetCarrier(const FunctionCallbackInfo<Value>& info) {
  int fd;
  if (!ArgFd(info, 0, &fd)) return;
  int on = ArgBool(info, 1) ? 1 : 0;
  if (ioctl(fd, TUNSETCARRIER, &on) != 0) return ThrowErrno(info, "ioctl", errno, "TUNSETCARRIER");
}

// linkSetUp(name, up): SIOCGIFFLAGS / SIOCSIFFLAGS (IFF_UP) in the caller's netns.
static void LinkSetUp(const FunctionCallbackInfo<Value>& info) {
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  if (!FillIfName(info, 0, &ifr)) return;
  bool up = ArgBool(info, 1);
  int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return ThrowErrno(info, "socket", errno);
  if (ioctl(s, SIOCGIFFLAGS, &ifr) != 0) {
    int err = errno;
    close(s);
    return ThrowErrno(info, "ioctl", err, "SIOCGIFFLAGS");
  }
  short nf = up ? (ifr.ifr_flags | IFF_UP) : (ifr.ifr_flags & ~IFF_UP);
  if (nf != ifr.ifr_flags) {
    ifr.ifr_flags = nf;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0) {
      int err = errno;
      close(s);
      return ThrowErrno(info, "ioctl", err, "SIOCSIFFLAGS");
    }
  }
  close(s);
}

// ---------------------------------------------------------------------------
// Batched frame I/O
//
// Frame i of a batch is frames[start + i], i < count.  Single-segment calls
// take offs[k] / lens[k] (or caps[k]) per frame; the *Sg variants take a flat
// segment list plus segCounts[k] (segments of frame k, 1..1024), the first
// segment of frame `start` being sum(segCounts[0..start)).
//
// Every segment is validated (integer offset >= 0, offset + len <= buffer
// length) BEFORE any I/O; a violation throws RangeError and nothing is
// transferred.  Offsets/lengths are read once into native memory, so a
// concurrent writer of the tables cannot move an iovec out of bounds.
//
// Result = number of frames transferred.  The batch stops early at EAGAIN
// (and, for reads, at a 0-byte read).  Any other errno on the first frame of
// the batch throws HostError; on a later frame the call returns the count so
// far, and the error resurfaces when the caller retries from that frame (so
// the caller always knows which frame failed: the first of the call).

struct Seg {
  uint64_t off;
  uint32_t len;
};

static bool CheckSeg(Isolate* isolate, double off, uint32_t len, size_t buflen, size_t frame,
                     Seg* out) {
  if (!(off >= 0) || off > kMaxSafeInteger || std::floor(off) != off) {
    ThrowRange(isolate, "frame " + std::to_string(frame) + ": offset is not a non-negative integer");
    return false;
  }
  uint64_t o = static_cast<uint64_t>(off);
  if (o > buflen || len > buflen - o) {
    ThrowRange(isolate, "frame " + std::to_string(frame) + ": [" + std::to_string(o) + ", " +
                            std::to_string(o + len) + ") is outside the buffer (" +
                            std::to_string(buflen) + " bytes)");
    return false;
  }
  out->off = o;
  out->len = len;
  return true;
}

static bool ArgCountStart(const FunctionCallbackInfo<Value>& info, int ci, int si, int64_t* count,
                          int64_t* start) {
  if (!ArgInt(info, ci, "count", 0, INT32_MAX, count)) return false;
  *start = 0;
  if (!info[si]->IsUndefined() && !ArgInt(info, si, "start", 0, INT32_MAX, start)) return false;
  return true;
}

// Performs the I/O for frames given as [segBegin[i], segBegin[i+1]) in `segs`.
static void DoFrames(const FunctionCallbackInfo<Value>& info, bool is_write, int fd, char* base,
                     const std::vector<Seg>& segs, const std::vector<uint32_t>& seg_begin,
                     size_t count, uint32_t* out_lens) {
  struct iovec stack_iov[16];
  std::vector<struct iovec> heap_iov;
  size_t done = 0;
  for (; done < count; done++) {
    const uint32_t b = seg_begin[done], e = seg_begin[done + 1];
    const size_t nseg = e - b;
    struct iovec* iov = stack_iov;
    if (nseg > 16) {
      heap_iov.resize(nseg);
      iov = heap_iov.data();
    }
    size_t total = 0;
    for (size_t k = 0; k < nseg; k++) {
      iov[k].iov_base = base + segs[b + k].off;
      iov[k].iov_len = segs[b + k].len;
      total += segs[b + k].len;
    }
    ssize_t n;
    do n = is_write ? writev(fd, iov, static_cast<int>(nseg)) : readv(fd, iov, static_cast<int>(nseg));
    while (n < 0 && errno == EINTR);
    if (n < 0) {
      int err = errno;
      if (err == EAGAIN || err == EWOULDBLOCK || done > 0) break;
      return ThrowErrno(info, is_write ? "writev" : "readv", err);
    }
    if (!is_write) {
      if (n == 0) break;  // EOF
      out_lens[done] = static_cast<uint32_t>(static_cast<size_t>(n) < total ? n : total);
    }
  }
  info.GetReturnValue().Set(static_cast<double>(done));
}

// writevFrames(fd, sab, offs: Float64Array, lens: Uint32Array, count, start?) -> frames written
// readFrames(fd, sab, offs: Float64Array, caps: Uint32Array, outLens: Uint32Array, count, start?)
static void FramesSingle(const FunctionCallbackInfo<Value>& info, bool is_write) {
  Isolate* isolate = info.GetIsolate();
  int fd;
  char* base;
  size_t buflen;
  int64_t count, start;
  if (!ArgFd(info, 0, &fd)) return;
  if (!ArgBuffer(info, 1, &base, &buflen)) return;
  const int ci = is_write ? 4 : 5;
  if (!ArgCountStart(info, ci, ci + 1, &count, &start)) return;
  const size_t need = static_cast<size_t>(start + count);
  double* offs;
  uint32_t* lens;
  uint32_t* out_lens = nullptr;
  if (!ArgFloat64Array(info, 2, "offs", need, &offs)) return;
  if (!ArgUint32Array(info, 3, is_write ? "lens" : "caps", need, &lens)) return;
  if (!is_write && !ArgUint32Array(info, 4, "outLens", need, &out_lens)) return;
  std::vector<Seg> segs(static_cast<size_t>(count));
  std::vector<uint32_t> seg_begin(static_cast<size_t>(count) + 1);
  for (size_t i = 0; i < static_cast<size_t>(count); i++) {
    const size_t f = static_cast<size_t>(start) + i;
    if (!CheckSeg(isolate, offs[f], lens[f], buflen, f, &segs[i])) return;
    seg_begin[i] = static_cast<uint32_t>(i);
  }
  seg_begin[static_cast<size_t>(count)] = static_cast<uint32_t>(count);
  DoFrames(info, is_write, fd, base, segs, seg_begin, static_cast<size_t>(count),
           out_lens ? out_lens + start : nullptr);
}

// writevFramesSg(fd, sab, segOffs, segLens, segCounts, count, start?) -> frames written
// readFramesSg(fd, sab, segOffs, segCaps, segCounts, outLens, count, start?) -> frames read
static void FramesSg(const FunctionCallbackInfo<Value>& info, bool is_write) {
  Isolate* isolate = info.GetIsolate();
  int fd;
  char* base;
  size_t buflen;
  int64_t count, start;
  if (!ArgFd(info, 0, &fd)) return;
  if (!ArgBuffer(info, 1, &base, &buflen)) return;
  const int ci = is_write ? 5 : 6;
  if (!ArgCountStart(info, ci, ci + 1, &count, &start)) return;
  const size_t need = static_cast<size_t>(start + count);
  uint32_t* seg_counts;
  uint32_t* out_lens = nullptr;
  if (!ArgUint32Array(info, 4, "segCounts", need, &seg_counts)) return;
  if (!is_write && !ArgUint32Array(info, 5, "outLens", need, &out_lens)) return;
  // Copy the counts once, then locate the segments.
  uint64_t first = 0;
  for (size_t f = 0; f < static_cast<size_t>(start); f++) first += seg_counts[f];
  std::vector<uint32_t> seg_begin(static_cast<size_t>(count) + 1);
  uint64_t total_segs = 0;
  for (size_t i = 0; i < static_cast<size_t>(count); i++) {
    uint32_t c = seg_counts[static_cast<size_t>(start) + i];
    if (c < 1 || c > kMaxSegsPerFrame)
      return ThrowRange(isolate, "frame " + std::to_string(start + i) +
                                     ": segCounts must be in [1, 1024]");
    seg_begin[i] = static_cast<uint32_t>(total_segs);
    total_segs += c;
  }
  seg_begin[static_cast<size_t>(count)] = static_cast<uint32_t>(total_segs);
  if (first + total_segs > UINT32_MAX) return ThrowRange(isolate, "too many segments");
  double* offs;
  uint32_t* lens;
  if (!ArgFloat64Array(info, 2, "segOffs", static_cast<size_t>(first + total_segs), &offs)) return;
  if (!ArgUint32Array(info, 3, is_write ? "segLens" : "segCaps",
                      static_cast<size_t>(first + total_segs), &lens))
    return;
  std::vector<Seg> segs(static_cast<size_t>(total_segs));
  for (size_t i = 0; i < static_cast<size_t>(count); i++) {
    for (uint32_t k = seg_begin[i]; k < seg_begin[i + 1]; k++) {
      if (!CheckSeg(isolate, offs[first + k], lens[first + k], buflen,
                    static_cast<size_t>(start) + i, &segs[k]))
        return;
    }
  }
  DoFrames(info, is_write, fd, base, segs, seg_begin, static_cast<size_t>(count),
           out_lens ? out_lens + start : nullptr);
}

static void WritevFrames(const FunctionCallbackInfo<Value>& info) { FramesSingle(info, true); }
static void ReadFrames(const FunctionCallbackInfo<Value>& info) { FramesSingle(info, false); }
static void WritevFramesSg(const FunctionCallbackInfo<Value>& info) { FramesSg(info, true); }
static void ReadFramesSg(const FunctionCallbackInfo<Value>& info) { FramesSg(info, false); }

// readvTail(fd, sab, segOffs, segCaps, nseg, tailSab, tailOff, tailCap) -> bytes | null
// One readv of one frame into nseg (1..1023) segments of `sab` followed by one
// segment of `tailSab` (a private overflow buffer): the frame lands straight
// in the first buffer (guest receive buffers) and only what does not fit
// there in the tail.  Every range is checked before the read (RangeError).
// Returns the bytes read (0 at EOF), null on EAGAIN; other errors throw HostError.
static void ReadvTail(const FunctionCallbackInfo<Value>& info) {
  Isolate* isolate = info.GetIsolate();
  int fd;
  char* base;
  size_t buflen;
  char* tbase;
  size_t tlen;
  int64_t nseg, toff, tcap;
  if (!ArgFd(info, 0, &fd)) return;
  if (!ArgBuffer(info, 1, &base, &buflen)) return;
  if (!ArgInt(info, 4, "nseg", 1, kMaxSegsPerFrame - 1, &nseg)) return;
  double* offs;
  uint32_t* caps;
  if (!ArgFloat64Array(info, 2, "segOffs", static_cast<size_t>(nseg), &offs)) return;
  if (!ArgUint32Array(info, 3, "segCaps", static_cast<size_t>(nseg), &caps)) return;
  if (!ArgBuffer(info, 5, &tbase, &tlen)) return;
  if (!ArgInt(info, 6, "tailOff", 0, static_cast<int64_t>(kMaxSafeInteger), &toff)) return;
  if (!ArgInt(info, 7, "tailCap", 0, UINT32_MAX, &tcap)) return;
  if (static_cast<uint64_t>(toff) > tlen || static_cast<uint64_t>(tcap) > tlen - static_cast<uint64_t>(toff))
    return ThrowRange(isolate, "tail segment is outside its buffer");
  struct iovec iov[kMaxSegsPerFrame];
  for (int64_t k = 0; k < nseg; k++) {
    Seg sg;
    if (!CheckSeg(isolate, offs[k], caps[k], buflen, 0, &sg)) return;
    iov[k].iov_base = base + sg.off;
    iov[k].iov_len = sg.len;
  }
  iov[nseg].iov_base = tbase + toff;
  iov[nseg].iov_len = static_cast<size_t>(tcap);
  ssize_t n;
  do n = readv(fd, iov, static_cast<int>(nseg + 1));
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    int err = errno;
    if (err == EAGAIN || err == EWOULDBLOCK) {
      info.GetReturnValue().SetNull();
      return;
    }
    return ThrowErrno(info, "readv", err);
  }
  info.GetReturnValue().Set(static_cast<double>(n));
}

// ---------------------------------------------------------------------------
// Module init

static void SetMethod(Local<Context> context, Local<Object> exports, Local<External> data,
                      const char* name, v8::FunctionCallback cb) {
  Isolate* isolate = context->GetIsolate();
  Local<FunctionTemplate> t = FunctionTemplate::New(isolate, cb, data);
  Local<String> n = Str(isolate, name);
  t->SetClassName(n);
  Local<Function> fn = t->GetFunction(context).ToLocalChecked();
  fn->SetName(n);
  exports->Set(context, n, fn).Check();
}

static void SetConst(Local<Context> context, Local<Object> obj, const char* name, double v) {
  Isolate* isolate = context->GetIsolate();
  obj->Set(context, Str(isolate, name), Number::New(isolate, v)).Check();
}

}  // namespace vmq_host

NODE_MODULE_INIT(/* exports, module, context */) {
  using namespace vmq_host;
  Isolate* isolate = context->GetIsolate();
  auto* data = new AddonData();
  node::AddEnvironmentCleanupHook(isolate, AddonData::Cleanup, data);
  Local<External> ext = External::New(isolate, data);

  SetMethod(context, exports, ext, "setErrorClass", SetErrorClass);
  SetMethod(context, exports, ext, "memfdCreate", MemfdCreate);
  SetMethod(context, exports, ext, "mmapShared", MmapShared);
  SetMethod(context, exports, ext, "guestMappingFaults", GuestMappingFaults);
  SetMethod(context, exports, ext, "releaseShared", ReleaseShared);
  InstallSigbusHandler();
  SetMethod(context, exports, ext, "close", Close);
  SetMethod(context, exports, ext, "setNonblock", SetNonblock);
  SetMethod(context, exports, ext, "eventfdCreate", EventfdCreate);
  SetMethod(context, exports, ext, "eventfdRead", EventfdRead);
  SetMethod(context, exports, ext, "eventfdWrite", EventfdWrite);
  SetMethod(context, exports, ext, "poll", Poll);
  SetMethod(context, exports, ext, "unixListen", UnixListen);
  SetMethod(context, exports, ext, "unixAccept", UnixAccept);
  SetMethod(context, exports, ext, "unixConnect", UnixConnect);
  SetMethod(context, exports, ext, "socketpair", SocketPair);
  SetMethod(context, exports, ext, "sendmsg", SendMsg);
  SetMethod(context, exports, ext, "recvmsg", RecvMsg);
  SetMethod(context, exports, ext, "tunOpen", TunOpen);
  SetMethod(context, exports, ext, "tunSetVnetHdrSize", TunSetVnetHdrSize);
  SetMethod(context, exports, ext, "tunSetOffload", TunSetOffload);
  SetMethod(context, exports, ext, "tunSetQueue", TunSetQueue);
  SetMethod(context, exports, ext, "tunSetCarrier", TunSetCarrier);
  SetMethod(context, exports, ext, "linkSetUp", LinkSetUp);
  SetMethod(context, exports, ext, "writevFrames", WritevFrames);
  SetMethod(context, exports, ext, "readFrames", ReadFrames);
  SetMethod(context, exports, ext, "writevFramesSg", WritevFramesSg);
  SetMethod(context, exports, ext, "readFramesSg", ReadFramesSg);
  SetMethod(context, exports, ext, "readvTail", ReadvTail);

  Local<Object> c = Object::New(isolate);
  SetConst(context, c, "POLLIN", POLLIN);
  SetConst(context, c, "POLLPRI", POLLPRI);
  SetConst(context, c, "POLLOUT", POLLOUT);
  SetConst(context, c, "POLLERR", POLLERR);
  SetConst(context, c, "POLLHUP", POLLHUP);
  SetConst(context, c, "POLLNVAL", POLLNVAL);
  SetConst(context, c, "POLLRDHUP", POLLRDHUP);
  SetConst(context, c, "TUN_F_CSUM", TUN_F_CSUM);
  SetConst(context, c, "TUN_F_TSO4", TUN_F_TSO4);
  SetConst(context, c, "TUN_F_TSO6", TUN_F_TSO6);
  SetConst(context, c, "TUN_F_TSO_ECN", TUN_F_TSO_ECN);
  SetConst(context, c, "TUN_F_UFO", TUN_F_UFO);
#ifdef TUN_F_USO4
  SetConst(context, c, "TUN_F_USO4", TUN_F_USO4);
  SetConst(context, c, "TUN_F_USO6", TUN_F_USO6);
#else
  SetConst(context, c, "TUN_F_USO4", 0x20);
  SetConst(context, c, "TUN_F_USO6", 0x40);
#endif
  SetConst(context, c, "PAGE_SIZE", static_cast<double>(sysconf(_SC_PAGESIZE)));
  exports->Set(context, Str(isolate, "constants"), c).Check();
}
