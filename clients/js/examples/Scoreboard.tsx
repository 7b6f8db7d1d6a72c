// A component using the hook (checked by tsc --strict with the JSX runtime's types; never run).

import { useState } from 'react';
import { useTether, useTetherMessage } from './useTether.js';

interface Goal {
  team: string;
  minute: number;
}

export function Scoreboard({ userId }: { userId: string }) {
  const { client, status } = useTether('/ws', {
    clientId: userId,
    channels: ['scores.live'],
    getToken: async () => (await fetch('/push-token')).text(),
  });
  const [goals, setGoals] = useState<Goal[]>([]);
  useTetherMessage<Goal>(client, 'goal', (msg) => setGoals((g) => [...g, msg.data]));
  return (
    <section>
      <p>{status === 'open' ? 'live' : status}</p>
      <ul>
        {goals.map((g, i) => (
          <li key={i}>
            {g.team} {g.minute}'
          </li>
        ))}
      </ul>
    </section>
  );
}
