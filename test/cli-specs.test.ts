import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseRss } from '../src/cli/rss-spec.js';
import { parseNetdev, openNetdev } from '../src/cli/netdev-spec.js';
import { DEFAULT_RSS_KEY } from '../src/net/toeplitz.js';
import { VIRTIO_NET_HASH_TYPE_ALL, VIRTIO_NET_HASH_TYPE_TCPv4, VIRTIO_NET_HASH_TYPE_UDPv6 } from '../src/net/rss.js';

test('--rss defaults: standard key, all hash types, 128-entry table spread over the pairs', () => {
  const c = parseRss('', 3);
  assert.deepEqual(c.key, DEFAULT_RSS_KEY);
  assert.equal(c.hashTypes, VIRTIO_NET_HASH_TYPE_ALL);
  assert.equal(c.indirectionTable.length, 128);
  assert.deepEqual([...c.indirectionTable.slice(0, 4)], [0, 1, 2, 0]);
});

test('--rss key, types and table are parsed; bad ones are clear errors', () => {
  const c = parseRss('key=00:11:22:33,types=tcpv4+udpv6,table=16', 2);
  assert.deepEqual([...c.key], [0x00, 0x11, 0x22, 0x33]);
  assert.equal(c.hashTypes, VIRTIO_NET_HASH_TYPE_TCPv4 | VIRTIO_NET_HASH_TYPE_UDPv6);
  assert.equal(c.indirectionTable.length, 16);
  assert.throws(() => parseRss('types=tcpv5', 2), /unknown "tcpv5"/);
  assert.throws(() => parseRss('key=xyz', 2), /hex/);
  assert.throws(() => parseRss(`key=${'00'.repeat(41)}`, 2), /1..40 bytes/);
  assert.throws(() => parseRss('table=100', 2), /power of two/);
});

test('--netdev specs: kinds and options; malformed ones are clear errors', () => {
  assert.deepEqual(parseNetdev('generator,flows=8,size=128').opts.get('flows'), '8');
  const g = openNetdev('generator,flows=8,size=128,template=on', 2);
  assert.deepEqual(g.spec, { kind: 'generator', flows: 8, size: 128, proto: 'udp', template: true, onFull: 'pace' });
  assert.deepEqual(openNetdev('loopback', 1).spec, { kind: 'loopback' });
  assert.throws(() => openNetdev('generator,flows=x', 1), /positive integer/);
  assert.throws(() => openNetdev('tap', 1), /ifname/);
  assert.throws(() => openNetdev('pcap', 1), /file=/);
  assert.throws(() => openNetdev('nope', 1), /unknown/);
  assert.throws(() => openNetdev('loopback,oops', 1), /key=value/);
});
