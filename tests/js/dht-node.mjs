// A foreign libp2p node (js-libp2p 3.x) for the simulated-internet tests.
//
// Server mode (default): a public-DHT server on /ipfs/kad/1.0.0 with a circuit relay v2
// server, standing in for the public bootstrap peers. It prints JSON lines on stdout:
//   {"event":"listening","peer":ID,"addrs":[...]}
//   {"event":"provider","digest":HEX,"peer":ID}   every provider record it stores
//
// Query mode (--query ADDR --find-node HEX --get-providers HEX [--hold SECS]): a DHT
// client that asks the peer at ADDR, and only it, FIND_NODE and GET_PROVIDERS, prints what
// that peer answered, then keeps the connection SECS seconds and says if it is still open:
//   {"event":"find_node","from":ID,"closer":[{"peer":ID,"addrs":[...]}]}
//   {"event":"get_providers","from":ID,"providers":[...],"closer":[...]}
//   {"event":"held","seconds":N,"open":BOOL}
import './polyfill.mjs'
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { circuitRelayServer } from '@libp2p/circuit-relay-v2'
import { MemoryDatastore } from 'datastore-core'
import { multiaddr } from '@multiformats/multiaddr'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'

const RAW = 0x55
const SHA2_256 = 0x12

// The public DHT's protocol; every address is kept (the lab's are private ones).
const DHT = { protocol: '/ipfs/kad/1.0.0', peerInfoMapper: passthroughMapper }

// A TCP node with noise, yamux, identify and ping, plus `services`.
function createNode (options, services) {
  return createLibp2p({
    ...options,
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify(), ping: ping(), ...services }
  })
}

function parseArgs (argv) {
  const args = { listen: [], bootstrap: [] }
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i]
    const value = argv[i + 1]
    if (value === undefined) throw new Error(`${name} needs a value`)
    switch (name) {
      case '--listen': args.listen.push(value); break
      case '--bootstrap': args.bootstrap.push(value); break
      case '--query': args.query = value; break
      case '--find-node': args.findNode = value; break
      case '--get-providers': args.getProviders = value; break
      case '--hold': args.hold = Number(value); break
      default: throw new Error(`unknown argument ${name}`)
    }
    i++
  }
  return args
}

const print = (value) => process.stdout.write(JSON.stringify(value) + '\n')
const hex = (bytes) => Buffer.from(bytes).toString('hex')
const peerOf = (p) => ({ peer: p.id.toString(), addrs: (p.multiaddrs ?? []).map(a => a.toString()) })

async function server (args) {
  const datastore = new MemoryDatastore()
  // Every provider record stored goes to stdout: what an observer of the DHT sees.
  const put = datastore.put.bind(datastore)
  datastore.put = async (key, value, options) => {
    const parts = key.toString().split('/')
    const at = parts.indexOf('provider')
    if (at >= 0 && parts.length >= at + 3) {
      try {
        const multihash = Buffer.from(decodeBase32(parts[at + 1]))
        print({ event: 'provider', digest: hex(multihash.subarray(2)), peer: parts[at + 2] })
      } catch (error) {
        print({ event: 'provider', undecodable: parts[at + 1], peer: parts[at + 2] })
      }
    }
    return put(key, value, options)
  }
  const node = await createNode({
    addresses: { listen: args.listen },
    datastore
  }, {
    relay: circuitRelayServer({ reservations: { maxReservations: 64 } }),
    dht: kadDHT({ ...DHT, clientMode: false, allowQueryWithZeroPeers: true })
  })
  await node.start()
  print({ event: 'listening', peer: node.peerId.toString(), addrs: node.getMultiaddrs().map(a => a.toString()) })
  for (const addr of args.bootstrap) {
    // The other bootstrap nodes may start a moment later: retry for a while.
    ;(async () => {
      for (let attempt = 0; attempt < 30; attempt++) {
        try {
          await node.dial(multiaddr(addr))
          return
        } catch {
          await new Promise(resolve => setTimeout(resolve, 500))
        }
      }
    })()
  }
  const stop = async () => { await node.stop(); process.exit(0) }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}

// RFC 4648 base32, lower case, no padding (the datastore's key encoding).
function decodeBase32 (text) {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz234567'
  let bits = 0
  let value = 0
  const out = []
  for (const char of text.toLowerCase()) {
    const index = alphabet.indexOf(char)
    if (index < 0) throw new Error(`not base32: ${char}`)
    value = (value << 5) | index
    bits += 5
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff)
      bits -= 8
    }
  }
  return Uint8Array.from(out)
}

async function query (args) {
  const target = multiaddr(args.query)
  const node = await createNode({}, { dht: kadDHT({ ...DHT, clientMode: true }) })
  await node.start()
  const connection = await node.dial(target)
  const remote = connection.remotePeer.toString()
  // The only peer in the routing table is ours: every query goes to it first.
  const deadline = Date.now() + 15000
  while (Date.now() < deadline) {
    const table = node.services.dht.routingTable
    if (table != null && table.size > 0) break
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  const signal = AbortSignal.timeout(20000)
  if (args.findNode) {
    for await (const event of node.services.dht.getClosestPeers(Buffer.from(args.findNode, 'hex'), { signal })) {
      if (event.name === 'PEER_RESPONSE' && event.from.toString() === remote) {
        print({ event: 'find_node', from: remote, closer: event.closer.map(peerOf) })
        break
      }
    }
  }
  if (args.getProviders) {
    const cid = CID.createV1(RAW, Digest.create(SHA2_256, Buffer.from(args.getProviders, 'hex')))
    for await (const event of node.services.dht.findProviders(cid, { signal })) {
      if (event.name === 'PEER_RESPONSE' && event.from.toString() === remote) {
        print({
          event: 'get_providers',
          from: remote,
          providers: event.providers.map(peerOf),
          closer: event.closer.map(peerOf)
        })
        break
      }
    }
  }
  if (args.hold > 0) {
    // A peer that serves the DHT keeps a connection that speaks no HelloPears protocol.
    await new Promise(resolve => setTimeout(resolve, args.hold * 1000))
    print({ event: 'held', seconds: args.hold, open: node.getConnections(connection.remotePeer).length > 0 })
  }
  await node.stop()
  process.exit(0)
}

const args = parseArgs(process.argv.slice(2))
;(args.query ? query(args) : server(args)).catch(error => {
  print({ event: 'error', message: String(error?.stack ?? error) })
  process.exit(1)
})
