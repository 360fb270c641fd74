// The Holepunch stack on HelloPears' benchmark workloads: Autobase (with a Hyperbee view)
// on Corestore, on disk, and Hypercore replication over a loopback TCP socket.
// Usage: node bench.mjs WORKLOAD [--quick]; prints one JSON object of metrics.
// Workloads: batched, awaited, two-writers, catch-up (see cargo xtask bench).

import Corestore from 'corestore'
import Autobase from 'autobase'
import Hyperbee from 'hyperbee'
import net from 'node:net'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

const quick = process.argv.includes('--quick')
const workload = process.argv[2]
const sizes = {
  batched: quick ? 20000 : 100000,
  awaited: quick ? 300 : 1000,
  twoWriters: quick ? 200 : 1000,
  catchUp: quick ? 20000 : 100000
}

function tempDir () {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'hp-bench-'))
}

function openBase (store, bootstrap) {
  return new Autobase(store, bootstrap, {
    valueEncoding: 'json',
    open: (viewStore) => new Hyperbee(viewStore.get('todos'), { keyEncoding: 'utf-8', valueEncoding: 'json', extension: false }),
    apply: async (nodes, view, host) => {
      for (const node of nodes) {
        const value = node.value
        if (value.addWriter) {
          await host.addWriter(Buffer.from(value.addWriter, 'hex'), { indexer: true })
          continue
        }
        await view.put(value._id, value)
      }
    }
  })
}

function todo (writer, n) {
  return { _id: `${writer}-${n}`, text: `todo ${n}`, done: false, created: Date.now() }
}

async function batched () {
  const dir = tempDir()
  const base = openBase(new Corestore(dir), null)
  await base.ready()
  const total = sizes.batched
  const started = performance.now()
  for (let i = 0; i < total; i += 100) {
    const batch = []
    for (let j = i; j < Math.min(i + 100, total); j++) batch.push(todo('a', j))
    await base.append(batch)
  }
  await base.update()
  const seconds = (performance.now() - started) / 1000
  const count = (await base.view.core.length)
  await base.close()
  fs.rmSync(dir, { recursive: true, force: true })
  return { ops: total, seconds, ops_per_s: total / seconds, view_blocks: count }
}

async function awaited () {
  const dir = tempDir()
  const base = openBase(new Corestore(dir), null)
  await base.ready()
  const total = sizes.awaited
  const started = performance.now()
  for (let i = 0; i < total; i++) {
    await base.append(todo('a', i))
    await base.update()
  }
  const seconds = (performance.now() - started) / 1000
  await base.close()
  fs.rmSync(dir, { recursive: true, force: true })
  return { ops: total, seconds, ops_per_s: total / seconds }
}

function replicate (a, b) {
  const s1 = a.replicate(true)
  const s2 = b.replicate(false)
  s1.pipe(s2).pipe(s1)
}

async function viewEntries (base) {
  const out = []
  for await (const { key } of base.view.createReadStream()) out.push(key)
  return out.join(',')
}

async function twoWriters () {
  const dirs = [tempDir(), tempDir()]
  const storeA = new Corestore(dirs[0])
  const storeB = new Corestore(dirs[1])
  const a = openBase(storeA, null)
  await a.ready()
  const b = openBase(storeB, a.key)
  await b.ready()
  replicate(storeA, storeB)
  await a.append({ addWriter: b.local.key.toString('hex') })
  while (!b.writable) {
    await b.update()
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  const each = sizes.twoWriters
  const started = performance.now()
  const write = async (base, name) => {
    for (let i = 0; i < each; i++) await base.append(todo(name, i))
  }
  await Promise.all([write(a, 'a'), write(b, 'b')])
  const written = performance.now()
  for (;;) {
    await Promise.all([a.update(), b.update()])
    if (a.view.core.length > 0 && (await viewEntries(a)) === (await viewEntries(b))) {
      const keys = (await viewEntries(a)).split(',').length
      if (keys >= 2 * each) break
    }
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
  const done = performance.now()
  await a.close()
  await b.close()
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true })
  const seconds = (done - started) / 1000
  return { ops: 2 * each, seconds, ops_per_s: (2 * each) / seconds, tail_ms: done - written }
}

async function catchUp () {
  const dirs = [tempDir(), tempDir()]
  const source = new Corestore(dirs[0])
  const core = source.get({ name: 'todos' })
  await core.ready()
  const total = sizes.catchUp
  for (let i = 0; i < total; i += 1000) {
    const blocks = []
    for (let j = i; j < Math.min(i + 1000, total); j++) blocks.push(Buffer.from(JSON.stringify(todo('a', j))))
    await core.append(blocks)
  }
  const server = net.createServer((socket) => socket.pipe(source.replicate(false, { keepAlive: false })).pipe(socket))
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const fresh = new Corestore(dirs[1])
  const started = performance.now()
  const clone = fresh.get({ key: core.key })
  await clone.ready()
  const socket = net.connect(server.address().port, '127.0.0.1')
  socket.pipe(fresh.replicate(true, { keepAlive: false })).pipe(socket)
  await clone.update({ wait: true })
  await clone.download({ start: 0, end: total }).done()
  const seconds = (performance.now() - started) / 1000
  socket.destroy()
  server.close()
  await clone.close()
  await fresh.close()
  await source.close()
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true })
  return { entries: total, seconds, entries_per_s: total / seconds }
}

const workloads = { batched, awaited, 'two-writers': twoWriters, 'catch-up': catchUp }
const run = workloads[workload]
if (!run) {
  console.error(`unknown workload ${workload}: one of ${Object.keys(workloads).join(', ')}`)
  process.exit(2)
}
const result = await run()
console.log(JSON.stringify(result))
process.exit(0)
