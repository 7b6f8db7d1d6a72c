// A React hook over TetherClient, as clients/js/README.md shows it; `tsc --strict` checks it.
//
// The client is made in an effect, never during render: server-side rendering runs no effects,
// so a server render never opens a socket (and never needs a WebSocket). Under React's
// StrictMode the effect runs twice in development; close() in the cleanup makes that harmless.

import { useEffect, useRef, useState } from 'react';
import { TetherClient, type Envelope, type Status, type TetherOptions } from '@tether/client';

export function useTether(url: string, options: TetherOptions = {}): { client: TetherClient | null; status: Status } {
  const [client, setClient] = useState<TetherClient | null>(null);
  const [status, setStatus] = useState<Status>('closed');
  // The latest options, so a getToken that is a new closure on every render does not reconnect.
  const latest = useRef(options);
  latest.current = options;
  const channels = (options.channels ?? []).join('\n');

  useEffect(() => {
    const { getToken, ...rest } = latest.current;
    const c = new TetherClient(url, {
      ...rest,
      getToken: getToken && (() => latest.current.getToken?.()),
    });
    const offStatus = c.onStatus((s) => setStatus(s.status));
    setClient(c);
    return () => {
      offStatus();
      c.close();
      setClient(null);
    };
  }, [url, options.clientId, channels]);

  return { client, status };
}

/** Calls `fn` for every message of `type` while the component is mounted. */
export function useTetherMessage<T = unknown>(client: TetherClient | null, type: string, fn: (msg: Envelope<T>) => void): void {
  const latest = useRef(fn);
  latest.current = fn;
  useEffect(() => (client ? client.on<T>(type, (msg) => latest.current(msg)) : undefined), [client, type]);
}
