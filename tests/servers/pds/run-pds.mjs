// A throwaway PLC directory (in memory) plus the reference PDS, both on 127.0.0.1,
// for the atmosphere tests. Configured from the environment (PDS_PORT, PLC_PORT,
// PDS_DATA_DIRECTORY, any PDS_* variable); prints "READY <json>" once both listen.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import crypto from 'node:crypto'
import { PDS, envToCfg, envToSecrets, readEnv } from '@atproto/pds'
import plcServer from '@did-plc/server'

const HOST = process.env.BIND_HOST ?? '127.0.0.1'
const pdsPort = Number(process.env.PDS_PORT ?? 2583)
const plcPort = Number(process.env.PLC_PORT ?? pdsPort + 1)

// Both servers call app.listen(port), which binds every interface; keep them on loopback.
const bindLoopback = (app) => {
  const listen = app.listen.bind(app)
  app.listen = (port, ...rest) => listen(port, HOST, ...rest)
}

const randomHex = () => crypto.randomBytes(32).toString('hex')
const ownsDataDir = !process.env.PDS_DATA_DIRECTORY
const dataDir =
  process.env.PDS_DATA_DIRECTORY ?? fs.mkdtempSync(path.join(os.tmpdir(), 'pds-'))
fs.mkdirSync(dataDir, { recursive: true })

// createAccount mints a did:plc and the PDS resolves DIDs through the same directory,
// so a PLC is required; the mock database keeps it in memory (no Postgres).
let plc = null
if (!process.env.PDS_DID_PLC_URL) {
  const { PlcServer, Database } = plcServer
  plc = PlcServer.create({ db: Database.mock(), port: plcPort })
  bindLoopback(plc.app)
  await plc.start()
  // A host name, not an IP: the PDS's DID resolver refuses IP hosts.
  process.env.PDS_DID_PLC_URL = `http://localhost:${plcPort}`
}

const defaults = {
  PDS_HOSTNAME: 'localhost', // public URL http://localhost:PORT, handles end in .test
  PDS_PORT: String(pdsPort),
  PDS_DATA_DIRECTORY: dataDir,
  PDS_BLOBSTORE_DISK_LOCATION: path.join(dataDir, 'blobs'),
  PDS_JWT_SECRET: randomHex(),
  PDS_DPOP_SECRET: randomHex(),
  PDS_ADMIN_PASSWORD: 'admin-pass',
  PDS_PLC_ROTATION_KEY_K256_PRIVATE_KEY_HEX: randomHex(),
  PDS_INVITE_REQUIRED: 'false',
  PDS_DEV_MODE: 'true', // allows the http public URL and a localhost PLC
  PDS_RATE_LIMITS_ENABLED: 'false',
  PDS_CRAWLERS: '',
  LOG_ENABLED: 'false',
}
for (const [key, value] of Object.entries(defaults)) process.env[key] ??= value

const env = readEnv()
const pds = await PDS.create(envToCfg(env), envToSecrets(env))
bindLoopback(pds.app)
await pds.start()

console.log(
  'READY ' +
    JSON.stringify({
      pds: `http://${HOST}:${pdsPort}`,
      publicUrl: pds.ctx.cfg.service.publicUrl,
      plc: process.env.PDS_DID_PLC_URL,
      dataDir,
    }),
)

let stopping = false
const shutdown = async () => {
  if (stopping) return
  stopping = true
  try {
    await pds.destroy()
    if (plc) await plc.destroy()
    if (ownsDataDir) fs.rmSync(dataDir, { recursive: true, force: true })
  } finally {
    process.exit(0)
  }
}
process.on('SIGTERM', shutdown)
process.on('SIGINT', shutdown)
// If the parent (pytest) dies without signalling, stdin closes: stop too.
if (process.env.PDS_EXIT_ON_STDIN_CLOSE === '1') {
  process.stdin.on('end', shutdown)
  process.stdin.on('close', shutdown)
  process.stdin.resume()
}
