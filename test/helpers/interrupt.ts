// Runs the CLI until its first progress line, then interrupts it (SIGINT, as Ctrl-C): the
// pretraining tests' way to reach the checkpoint-and-resume path (cli-pretrain.test.ts,
// pretrain.test.ts).
import { spawn } from 'node:child_process';

export interface Interrupted {
  /** The exit code (130 after SIGINT), or null when a signal ended it. */
  code: number | null;
  /** Everything it wrote to stderr. */
  stderr: string;
}

/**
 * Spawns `node cli …args` with `env`, waits for a "step i/n" progress line on stderr (or its exit,
 * whichever is first), sends SIGINT and resolves once it has exited.
 */
export async function interruptAtFirstStep(cli: string, args: string[], env: NodeJS.ProcessEnv): Promise<Interrupted> {
  const child = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let stderr = '';
  const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
  await new Promise<void>((res) => {
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (/step \d+\/\d+/.test(stderr)) res();
    });
    child.on('exit', () => res());
  });
  child.kill('SIGINT');
  const code = await exited;
  // 'exit' can come before the last of stderr: wait for the stream to end.
  if (!child.stderr.readableEnded) await new Promise<void>((res) => child.stderr.on('end', () => res()));
  return { code, stderr };
}
