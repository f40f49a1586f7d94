// Accept a Task with fhir-kit-client (Node): pass If-Match in the request options of update().
//
//   npm install fhir-kit-client
//   node fhir-kit-client-accept.js http://127.0.0.1:8080/fhir "$(fhir-gateway token welzijn-de-brug-cms)" <task-id>
const Client = require('fhir-kit-client');

async function accept(baseUrl, token, taskId) {
  const client = new Client({ baseUrl, customHeaders: { Authorization: `Bearer ${token}` } });
  const task = await client.read({ resourceType: 'Task', id: taskId });
  const body = { ...task, status: 'accepted' };
  // without If-Match the gateway answers 428 Precondition Required
  return client.update({
    resourceType: 'Task',
    id: taskId,
    body,
    options: { headers: { 'If-Match': `W/"${task.meta.versionId}"` } },
  });
}

const [baseUrl, token, taskId] = process.argv.slice(2);
accept(baseUrl, token, taskId).then((t) => console.log(t.status));
