/**
 * vhost-user protocol constants: request codes, header flags, feature bits
 * and limits.
 *
 * Sources: /work/shared/ref/vhost-user.rst (QEMU docs/interop/vhost-user.rst),
 * sections "Message Specification", "Protocol features", "Front-end message
 * types" and "Back-end message types". That copy of the spec stops at
 * `VHOST_USER_GET_STATUS` (40), `VHOST_USER_PROTOCOL_F_STATUS` (16) and
 * `VHOST_USER_SLAVE_VRING_ERR` (5). The entries marked *(upstream)* below
 * (requests 41..43, protocol features 17..19, back-end requests 6..8) come
 * from the current upstream text of the same document; their numbers and
 * payload layouts match QEMU's hw/virtio/vhost-user.c. Work still under review
 * upstream (`VHOST_USER_PROTOCOL_F_SHMEM`, `VHOST_USER_GET_SHMEM_CONFIG`,
 * `VHOST_USER_BACKEND_SHMEM_MAP/UNMAP`) is deliberately not included; those
 * codes decode as `UNKNOWN_REQUEST`.
 *
 * The spec's "SLAVE" names were renamed "BACKEND" upstream (same numbers);
 * this module uses the new names only.
 */

// ---------------------------------------------------------------------------
// Header (spec "Message Specification" / "Header")
// ---------------------------------------------------------------------------

/** Size in bytes of the message header: request u32 @0, flags u32 @4, size u32 @8. */
export const VHOST_USER_HEADER_SIZE = 12;

/** Mask of the version field, the lower 2 bits of `flags`. */
export const VHOST_USER_VERSION_MASK = 0x3;
/** The only protocol version: `flags & VHOST_USER_VERSION_MASK` must equal it. */
export const VHOST_USER_VERSION = 0x1;
/** Bit 2 of `flags`: set on every reply (back-end → front-end on the main channel). */
export const VHOST_USER_REPLY_MASK = 0x4;
/** Bit 3 of `flags`: the sender asks for a REPLY_ACK (see spec "VHOST_USER_PROTOCOL_F_REPLY_ACK"). */
export const VHOST_USER_NEED_REPLY_MASK = 0x8;
/** Every flag bit the spec defines; any other bit set is rejected as `BAD_FLAGS`. */
export const VHOST_USER_FLAGS_KNOWN = VHOST_USER_VERSION_MASK | VHOST_USER_REPLY_MASK | VHOST_USER_NEED_REPLY_MASK;

/**
 * Largest payload (`size` header field) this codec accepts, in bytes.
 *
 * The spec sets no number. QEMU, libvhost-user and DPDK each reject a size
 * larger than `sizeof` their C payload union, which is a few hundred bytes
 * (memory table 8 + 8*32 = 264, config 12 + 256 = 268) up to about 1.1 KiB
 * when the crypto-session structs are included. 4096 comfortably covers every
 * payload the spec defines (and the proposed SHMEM config, 8 + 8*256 = 2056)
 * while bounding what a peer can make us buffer. The framer rejects a larger
 * header before reading its payload (`OVERSIZED`).
 */
export const VHOST_USER_MAX_PAYLOAD_SIZE = 4096;

// ---------------------------------------------------------------------------
// Feature bits
// ---------------------------------------------------------------------------

/** Virtio feature bit number 30, reused by vhost-user: the back-end supports GET/SET_PROTOCOL_FEATURES. */
export const VHOST_USER_F_PROTOCOL_FEATURES = 30;
/** {@link VHOST_USER_F_PROTOCOL_FEATURES} as a 64-bit feature mask (bigint, like src/virtio/features.ts). */
export const VHOST_USER_F_PROTOCOL_FEATURES_MASK = 1n << 30n;
/** Vhost feature bit 26 (`VHOST_F_LOG_ALL`): the front-end asks the back-end to log all writes (spec "Migration"). */
export const VHOST_F_LOG_ALL = 26;
/** Bit 0 of the vring address `flags` (`VHOST_VRING_F_LOG`): log writes to the used ring. */
export const VHOST_VRING_F_LOG = 0;
/** Dirty-log page size (spec "Migration"). */
export const VHOST_LOG_PAGE = 0x1000;

/** Protocol feature bit numbers (spec "Protocol features"); a mask is `1n << BigInt(bit)`. */
export const VHOST_USER_PROTOCOL_F_MQ = 0;
export const VHOST_USER_PROTOCOL_F_LOG_SHMFD = 1;
export const VHOST_USER_PROTOCOL_F_RARP = 2;
export const VHOST_USER_PROTOCOL_F_REPLY_ACK = 3;
/** Spec name `VHOST_USER_PROTOCOL_F_MTU` (QEMU's enum calls it `..._NET_MTU`). */
export const VHOST_USER_PROTOCOL_F_NET_MTU = 4;
/** Previously `VHOST_USER_PROTOCOL_F_SLAVE_REQ`. */
export const VHOST_USER_PROTOCOL_F_BACKEND_REQ = 5;
export const VHOST_USER_PROTOCOL_F_CROSS_ENDIAN = 6;
export const VHOST_USER_PROTOCOL_F_CRYPTO_SESSION = 7;
export const VHOST_USER_PROTOCOL_F_PAGEFAULT = 8;
export const VHOST_USER_PROTOCOL_F_CONFIG = 9;
/** Previously `VHOST_USER_PROTOCOL_F_SLAVE_SEND_FD`. */
export const VHOST_USER_PROTOCOL_F_BACKEND_SEND_FD = 10;
export const VHOST_USER_PROTOCOL_F_HOST_NOTIFIER = 11;
export const VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD = 12;
export const VHOST_USER_PROTOCOL_F_RESET_DEVICE = 13;
export const VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS = 14;
export const VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS = 15;
export const VHOST_USER_PROTOCOL_F_STATUS = 16;
/**
 * *(upstream)* When negotiated, each memory region description grows two u32
 * fields (xen mmap flags, domid). This codec does not implement that layout:
 * a back-end using it must not offer this bit.
 */
export const VHOST_USER_PROTOCOL_F_XEN_MMAP = 17;
/** *(upstream)* */
export const VHOST_USER_PROTOCOL_F_SHARED_OBJECT = 18;
/** *(upstream)* */
export const VHOST_USER_PROTOCOL_F_DEVICE_STATE = 19;

/** Names of the protocol feature bits, indexed by bit number. */
export const VHOST_USER_PROTOCOL_FEATURE_NAMES: readonly string[] = [
  'MQ',
  'LOG_SHMFD',
  'RARP',
  'REPLY_ACK',
  'NET_MTU',
  'BACKEND_REQ',
  'CROSS_ENDIAN',
  'CRYPTO_SESSION',
  'PAGEFAULT',
  'CONFIG',
  'BACKEND_SEND_FD',
  'HOST_NOTIFIER',
  'INFLIGHT_SHMFD',
  'RESET_DEVICE',
  'INBAND_NOTIFICATIONS',
  'CONFIGURE_MEM_SLOTS',
  'STATUS',
  'XEN_MMAP',
  'SHARED_OBJECT',
  'DEVICE_STATE',
];

// ---------------------------------------------------------------------------
// Payload field constants
// ---------------------------------------------------------------------------

/** Bits 0-7 of the u64 of SET_VRING_KICK/CALL/ERR (and of a vring area's u64): the vring index. */
export const VHOST_USER_VRING_IDX_MASK = 0xff;
/** Bit 8 of the same u64: no file descriptor accompanies the message (poll instead). */
export const VHOST_USER_VRING_NOFD_MASK = 1 << 8;

/** Number of regions a SET_MEM_TABLE message can carry (and fds it can attach). */
export const VHOST_MEMORY_BASELINE_NREGIONS = 8;
/** Most fds the back-end may attach to one back-end channel message (spec "Back-end communication"). */
export const VHOST_USER_BACKEND_MAX_FDS = 8;
/**
 * QEMU's cap on memory slots with CONFIGURE_MEM_SLOTS for targets without an
 * ACPI/sPAPR limit (x86 and Arm use ACPI_MAX_RAM_SLOTS = 256). A back-end's
 * GET_MAX_MEM_SLOTS answer is capped by the front-end to its own limit.
 */
export const VHOST_USER_MAX_RAM_SLOTS = 512;
/** Largest virtio config space access (QEMU and DPDK `VHOST_USER_MAX_CONFIG_SIZE`). */
export const VHOST_USER_MAX_CONFIG_SIZE = 256;
/** Size of the config-space payload header: offset u32, size u32, flags u32. */
export const VHOST_USER_CONFIG_HDR_SIZE = 12;
/** Config access `flags` value: front-end writes a writable field. */
export const VHOST_SET_CONFIG_TYPE_FRONTEND = 0;
/** Config access `flags` value: live-migration restore (read-only fields allowed). */
export const VHOST_SET_CONFIG_TYPE_MIGRATION = 1;

/** IOTLB message `type` values (spec "An IOTLB message"). */
export const VHOST_IOTLB_MISS = 1;
export const VHOST_IOTLB_UPDATE = 2;
export const VHOST_IOTLB_INVALIDATE = 3;
export const VHOST_IOTLB_ACCESS_FAIL = 4;
/** IOTLB `perm` values. */
export const VHOST_ACCESS_NO = 0;
export const VHOST_ACCESS_RO = 1;
export const VHOST_ACCESS_WO = 2;
export const VHOST_ACCESS_RW = 3;

/** *(upstream)* Device state transfer direction: back-end → front-end (migration source). */
export const VHOST_TRANSFER_STATE_DIRECTION_SAVE = 0;
/** *(upstream)* Device state transfer direction: front-end → back-end (migration destination). */
export const VHOST_TRANSFER_STATE_DIRECTION_LOAD = 1;
/** *(upstream)* The only defined migration phase: VM stopped, device suspended. */
export const VHOST_TRANSFER_STATE_PHASE_STOPPED = 0;

// ---------------------------------------------------------------------------
// Request codes
// ---------------------------------------------------------------------------

/** Front-end → back-end request codes (spec "Front-end message types"). */
export const VhostUserRequest = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  /** Previously `VHOST_USER_SET_SLAVE_REQ_FD`. */
  SET_BACKEND_REQ_FD: 21,
  IOTLB_MSG: 22,
  SET_VRING_ENDIAN: 23,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  CREATE_CRYPTO_SESSION: 26,
  CLOSE_CRYPTO_SESSION: 27,
  POSTCOPY_ADVISE: 28,
  POSTCOPY_LISTEN: 29,
  POSTCOPY_END: 30,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  GPU_SET_SOCKET: 33,
  RESET_DEVICE: 34,
  VRING_KICK: 35,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
  /** *(upstream)* */
  GET_SHARED_OBJECT: 41,
  /** *(upstream)* */
  SET_DEVICE_STATE_FD: 42,
  /** *(upstream)* */
  CHECK_DEVICE_STATE: 43,
} as const;
/** Name of a front-end request (`'SET_VRING_NUM'`, ...). */
export type VhostUserRequestName = keyof typeof VhostUserRequest;

/** Back-end → front-end request codes on the back-end channel (spec "Back-end message types"). */
export const VhostUserBackendRequest = {
  /** Previously `VHOST_USER_SLAVE_IOTLB_MSG`. */
  IOTLB_MSG: 1,
  /** Previously `VHOST_USER_SLAVE_CONFIG_CHANGE_MSG`. */
  CONFIG_CHANGE_MSG: 2,
  /** Previously `VHOST_USER_SLAVE_VRING_HOST_NOTIFIER_MSG`. */
  VRING_HOST_NOTIFIER_MSG: 3,
  /** Previously `VHOST_USER_SLAVE_VRING_CALL`. */
  VRING_CALL: 4,
  /** Previously `VHOST_USER_SLAVE_VRING_ERR`. */
  VRING_ERR: 5,
  /** *(upstream)* */
  SHARED_OBJECT_ADD: 6,
  /** *(upstream)* */
  SHARED_OBJECT_REMOVE: 7,
  /** *(upstream)* */
  SHARED_OBJECT_LOOKUP: 8,
} as const;
/** Name of a back-end request without its `BACKEND_` prefix (`'VRING_CALL'`, ...). */
export type VhostUserBackendRequestName = keyof typeof VhostUserBackendRequest;

// Flat `VHOST_USER_*` aliases, for code that follows the C names.
export const VHOST_USER_GET_FEATURES = VhostUserRequest.GET_FEATURES;
export const VHOST_USER_SET_FEATURES = VhostUserRequest.SET_FEATURES;
export const VHOST_USER_SET_OWNER = VhostUserRequest.SET_OWNER;
export const VHOST_USER_RESET_OWNER = VhostUserRequest.RESET_OWNER;
export const VHOST_USER_SET_MEM_TABLE = VhostUserRequest.SET_MEM_TABLE;
export const VHOST_USER_SET_LOG_BASE = VhostUserRequest.SET_LOG_BASE;
export const VHOST_USER_SET_LOG_FD = VhostUserRequest.SET_LOG_FD;
export const VHOST_USER_SET_VRING_NUM = VhostUserRequest.SET_VRING_NUM;
export const VHOST_USER_SET_VRING_ADDR = VhostUserRequest.SET_VRING_ADDR;
export const VHOST_USER_SET_VRING_BASE = VhostUserRequest.SET_VRING_BASE;
export const VHOST_USER_GET_VRING_BASE = VhostUserRequest.GET_VRING_BASE;
export const VHOST_USER_SET_VRING_KICK = VhostUserRequest.SET_VRING_KICK;
export const VHOST_USER_SET_VRING_CALL = VhostUserRequest.SET_VRING_CALL;
export const VHOST_USER_SET_VRING_ERR = VhostUserRequest.SET_VRING_ERR;
export const VHOST_USER_GET_PROTOCOL_FEATURES = VhostUserRequest.GET_PROTOCOL_FEATURES;
export const VHOST_USER_SET_PROTOCOL_FEATURES = VhostUserRequest.SET_PROTOCOL_FEATURES;
export const VHOST_USER_GET_QUEUE_NUM = VhostUserRequest.GET_QUEUE_NUM;
export const VHOST_USER_SET_VRING_ENABLE = VhostUserRequest.SET_VRING_ENABLE;
export const VHOST_USER_SEND_RARP = VhostUserRequest.SEND_RARP;
export const VHOST_USER_NET_SET_MTU = VhostUserRequest.NET_SET_MTU;
export const VHOST_USER_SET_BACKEND_REQ_FD = VhostUserRequest.SET_BACKEND_REQ_FD;
export const VHOST_USER_IOTLB_MSG = VhostUserRequest.IOTLB_MSG;
export const VHOST_USER_SET_VRING_ENDIAN = VhostUserRequest.SET_VRING_ENDIAN;
export const VHOST_USER_GET_CONFIG = VhostUserRequest.GET_CONFIG;
export const VHOST_USER_SET_CONFIG = VhostUserRequest.SET_CONFIG;
export const VHOST_USER_CREATE_CRYPTO_SESSION = VhostUserRequest.CREATE_CRYPTO_SESSION;
export const VHOST_USER_CLOSE_CRYPTO_SESSION = VhostUserRequest.CLOSE_CRYPTO_SESSION;
export const VHOST_USER_POSTCOPY_ADVISE = VhostUserRequest.POSTCOPY_ADVISE;
export const VHOST_USER_POSTCOPY_LISTEN = VhostUserRequest.POSTCOPY_LISTEN;
export const VHOST_USER_POSTCOPY_END = VhostUserRequest.POSTCOPY_END;
export const VHOST_USER_GET_INFLIGHT_FD = VhostUserRequest.GET_INFLIGHT_FD;
export const VHOST_USER_SET_INFLIGHT_FD = VhostUserRequest.SET_INFLIGHT_FD;
export const VHOST_USER_GPU_SET_SOCKET = VhostUserRequest.GPU_SET_SOCKET;
export const VHOST_USER_RESET_DEVICE = VhostUserRequest.RESET_DEVICE;
export const VHOST_USER_VRING_KICK = VhostUserRequest.VRING_KICK;
export const VHOST_USER_GET_MAX_MEM_SLOTS = VhostUserRequest.GET_MAX_MEM_SLOTS;
export const VHOST_USER_ADD_MEM_REG = VhostUserRequest.ADD_MEM_REG;
export const VHOST_USER_REM_MEM_REG = VhostUserRequest.REM_MEM_REG;
export const VHOST_USER_SET_STATUS = VhostUserRequest.SET_STATUS;
export const VHOST_USER_GET_STATUS = VhostUserRequest.GET_STATUS;
export const VHOST_USER_GET_SHARED_OBJECT = VhostUserRequest.GET_SHARED_OBJECT;
export const VHOST_USER_SET_DEVICE_STATE_FD = VhostUserRequest.SET_DEVICE_STATE_FD;
export const VHOST_USER_CHECK_DEVICE_STATE = VhostUserRequest.CHECK_DEVICE_STATE;

export const VHOST_USER_BACKEND_IOTLB_MSG = VhostUserBackendRequest.IOTLB_MSG;
export const VHOST_USER_BACKEND_CONFIG_CHANGE_MSG = VhostUserBackendRequest.CONFIG_CHANGE_MSG;
export const VHOST_USER_BACKEND_VRING_HOST_NOTIFIER_MSG = VhostUserBackendRequest.VRING_HOST_NOTIFIER_MSG;
export const VHOST_USER_BACKEND_VRING_CALL = VhostUserBackendRequest.VRING_CALL;
export const VHOST_USER_BACKEND_VRING_ERR = VhostUserBackendRequest.VRING_ERR;
export const VHOST_USER_BACKEND_SHARED_OBJECT_ADD = VhostUserBackendRequest.SHARED_OBJECT_ADD;
export const VHOST_USER_BACKEND_SHARED_OBJECT_REMOVE = VhostUserBackendRequest.SHARED_OBJECT_REMOVE;
export const VHOST_USER_BACKEND_SHARED_OBJECT_LOOKUP = VhostUserBackendRequest.SHARED_OBJECT_LOOKUP;

const REQUEST_NAMES = new Map<number, VhostUserRequestName>(
  (Object.entries(VhostUserRequest) as [VhostUserRequestName, number][]).map(([k, v]) => [v, k]),
);
const BACKEND_REQUEST_NAMES = new Map<number, VhostUserBackendRequestName>(
  (Object.entries(VhostUserBackendRequest) as [VhostUserBackendRequestName, number][]).map(([k, v]) => [v, k]),
);

/** Name of a front-end request code, or undefined if the code is not one this module knows. */
export function requestName(code: number): VhostUserRequestName | undefined {
  return REQUEST_NAMES.get(code);
}

/** Name (without `BACKEND_`) of a back-end request code, or undefined if unknown. */
export function backendRequestName(code: number): VhostUserBackendRequestName | undefined {
  return BACKEND_REQUEST_NAMES.get(code);
}

/**
 * Front-end requests whose reply is part of the request itself (spec
 * "Communication" plus each request's `reply payload`): the back-end always
 * answers these, and for them a set NEED_REPLY flag changes nothing (spec
 * "VHOST_USER_PROTOCOL_F_REPLY_ACK"). Every other request gets a u64 REPLY_ACK
 * only when its header has {@link VHOST_USER_NEED_REPLY_MASK}.
 *
 * `SET_LOG_BASE` is here because this codec only accepts its shared-memory
 * form (LOG_SHMFD), which is answered. `SET_MEM_TABLE`/`ADD_MEM_REG` are not:
 * their reply exists only in postcopy mode. `IOTLB_MSG` is not either: the
 * spec says the back-end acknowledges it with a u64, but QEMU always sets
 * NEED_REPLY on it and DPDK answers only then, so it goes through the
 * ordinary REPLY_ACK path.
 */
export const VHOST_USER_REQUESTS_WITH_REPLY: ReadonlySet<number> = new Set<number>([
  VhostUserRequest.GET_FEATURES,
  VhostUserRequest.GET_PROTOCOL_FEATURES,
  VhostUserRequest.GET_VRING_BASE,
  VhostUserRequest.SET_LOG_BASE,
  VhostUserRequest.GET_QUEUE_NUM,
  VhostUserRequest.GET_CONFIG,
  VhostUserRequest.CREATE_CRYPTO_SESSION,
  VhostUserRequest.POSTCOPY_ADVISE,
  VhostUserRequest.POSTCOPY_END,
  VhostUserRequest.GET_INFLIGHT_FD,
  VhostUserRequest.GET_MAX_MEM_SLOTS,
  VhostUserRequest.GET_STATUS,
  VhostUserRequest.GET_SHARED_OBJECT,
  VhostUserRequest.SET_DEVICE_STATE_FD,
  VhostUserRequest.CHECK_DEVICE_STATE,
]);
