/**
 * The one error type of the vhost-user codec.
 *
 * File-descriptor ownership: fds received over the socket are owned by
 * whoever holds them last. Whenever the codec refuses a message it hands every
 * fd that came with it back through {@link VhostUserProtocolError.fds}; the
 * catcher must close them (the codec does no I/O and never closes anything).
 */

/**
 * Why a message was refused.
 *
 * - `UNKNOWN_REQUEST`  request code not defined by the spec (or not for this direction)
 * - `BAD_VERSION`      `flags & 0x3` is not 1
 * - `BAD_FLAGS`        a reserved flag bit is set, REPLY set on a request / missing on a reply,
 *                      or NEED_REPLY set on a reply
 * - `BAD_SIZE`         payload size is not the one (or in the range) the request takes,
 *                      or does not match the header's `size`
 * - `OVERSIZED`        header `size` above the codec's payload limit (framing can't continue)
 * - `BAD_FD_COUNT`     number of attached fds differs from what the message takes
 * - `BAD_FIELD`        a field is out of range (nregions, zero-size, overlap, overflow,
 *                      reserved bits, enum values...)
 * - `UNSAFE_INTEGER`   a u64 that this codec exposes as a JS number is above
 *                      `Number.MAX_SAFE_INTEGER` (2^53 - 1)
 * - `TRUNCATED`        the stream ended in the middle of a message
 * - `UNEXPECTED_REPLY` a reply whose request code is not the one that was sent
 */
export type VhostUserErrorCode =
  | 'UNKNOWN_REQUEST'
  | 'BAD_VERSION'
  | 'BAD_FLAGS'
  | 'BAD_SIZE'
  | 'OVERSIZED'
  | 'BAD_FD_COUNT'
  | 'BAD_FIELD'
  | 'UNSAFE_INTEGER'
  | 'TRUNCATED'
  | 'UNEXPECTED_REPLY';

/** Details attached to a {@link VhostUserProtocolError}. */
export interface VhostUserProtocolErrorInit {
  /** Request code from the header (undefined when no header was read, e.g. TRUNCATED before 12 bytes). */
  request?: number;
  /** Whether the refused message had NEED_REPLY set: the caller may answer with a non-zero REPLY_ACK. */
  needReply?: boolean;
  /** Every fd that arrived with the refused message(s); ownership passes to the catcher, who must close them. */
  fds?: readonly number[];
  /** Underlying exception, if the refusal wraps one. */
  cause?: unknown;
}

/**
 * A message violated the vhost-user protocol. Thrown by every decoder and by
 * the framer; never thrown for a message that was accepted.
 *
 * The caller decides what to do: answer a `needReply` message with a non-zero
 * REPLY_ACK and carry on (possible for errors found after framing: any code but
 * `OVERSIZED`/`TRUNCATED`), or close the connection. Either way it must close
 * every fd in {@link fds}.
 */
export class VhostUserProtocolError extends Error {
  override readonly name = 'VhostUserProtocolError';
  readonly code: VhostUserErrorCode;
  /** Request code of the offending message, when a header was read. */
  readonly request: number | undefined;
  /** NEED_REPLY flag of the offending message (false when unknown). */
  readonly needReply: boolean;
  /** Fds received with the offending message(s): now owned by the catcher, who must close them. */
  readonly fds: readonly number[];

  constructor(code: VhostUserErrorCode, message: string, init: VhostUserProtocolErrorInit = {}) {
    super(`${code}: ${message}`, init.cause === undefined ? undefined : { cause: init.cause });
    this.code = code;
    this.request = init.request;
    this.needReply = init.needReply ?? false;
    this.fds = Object.freeze([...(init.fds ?? [])]);
  }
}
