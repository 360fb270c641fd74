// Writes the signaling fixtures of the webrtc-p2p crate with js-libp2p's own encoder
// (@libp2p/webrtc's protons Message, length-prefixed as its pbStream writes them) and
// real SDP and candidates from its WebRTC stack (node-datachannel).
// Run: node webrtc-fixtures.mjs ../../webrtc-p2p/tests/fixtures
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Message } from './node_modules/@libp2p/webrtc/dist/src/private-to-private/pb/message.js'
import { RTCPeerConnection } from './node_modules/@libp2p/webrtc/dist/src/webrtc/index.js'
import * as varint from 'uint8-varint'

const dir = process.argv[2]
const framed = (message) => {
  const body = Message.encode(message)
  return Buffer.concat([Buffer.from(varint.encode(body.length)), Buffer.from(body)])
}
const write = (name, message) => writeFileSync(join(dir, name), framed(message).toString('hex') + '\n')

const a = new RTCPeerConnection()
const b = new RTCPeerConnection()
const candidates = []
a.onicecandidate = ({ candidate }) => { if (candidate != null && candidate.candidate !== '') candidates.push(candidate.toJSON()) }
a.createDataChannel('init')
const offer = await a.createOffer()
await a.setLocalDescription(offer)
await b.setRemoteDescription(offer)
const answer = await b.createAnswer()
await b.setLocalDescription(answer)
for (let i = 0; i < 50 && candidates.length === 0; i++) await new Promise(resolve => setTimeout(resolve, 100))
const host = candidates.find(c => c.candidate.includes('typ host')) ?? candidates[0]
// A fixed address: the fixture must not carry this machine's.
const candidate = { ...host, candidate: host.candidate.replace(/ (UDP|udp) (\d+) \S+ \d+ typ/, ' $1 $2 192.0.2.10 50000 typ') }
write('offer.hex', { type: Message.Type.SDP_OFFER, data: offer.sdp })
write('answer.hex', { type: Message.Type.SDP_ANSWER, data: answer.sdp })
write('candidate.hex', { type: Message.Type.ICE_CANDIDATE, data: JSON.stringify(candidate) })
write('end-of-candidates.hex', { type: Message.Type.ICE_CANDIDATE, data: JSON.stringify(null) })
console.log(JSON.stringify(candidate))
a.close(); b.close()
process.exit(0)
