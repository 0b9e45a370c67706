// Artillery processor for taskmaster.yml (Artillery 2.x, Node 18+ for the global fetch).
//
// registerUser: the `before` flow calls it once per run. It registers a fresh user through
// POST /api/auth/register (a unique e-mail per run) and puts the token into the context, from
// where `config.socketio.auth.token: "{{ token }}"` hands it to every virtual user's socket.
// newMutation: a unique mutation_id per emit; it comes back as `origin` in the event.
"use strict";

let counter = 0;

function registerUser(context, events, done) {
  const target = context.vars.target.replace(/\/+$/, "");
  const stamp = `${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
  const body = {
    email: `artillery-${stamp}@loadtest.example.com`,
    password: `artillery-${stamp}`,
    name: "Artillery",
  };
  fetch(`${target}/api/auth/register`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  })
    .then(async (response) => {
      const answer = await response.json();
      if (response.status !== 201) {
        throw new Error(`register answered ${response.status}: ${JSON.stringify(answer)}`);
      }
      context.vars.token = answer.token;
      context.vars.userId = answer.user.id;
      context.vars.scope = `user:${answer.user.id}`;
      done();
    })
    .catch((error) => done(error));
}

function newMutation(context, events, done) {
  counter += 1;
  context.vars.mutationId = `art-${context.vars.$uuid}-${counter}`;
  return done();
}

module.exports = { registerUser, newMutation };
