// Accept a Task with @medplum/core (TypeScript): updateResource() sends no If-Match by itself;
// pass it in the request options.
//
//   npm install @medplum/core
//   npx tsx medplum-accept.ts http://127.0.0.1:8080/ "$(fhir-gateway token welzijn-de-brug-cms)" <task-id>
import { MedplumClient } from '@medplum/core';
import type { Task } from '@medplum/fhirtypes';

async function accept(baseUrl: string, token: string, taskId: string): Promise<Task> {
  const medplum = new MedplumClient({ baseUrl, fhirUrlPath: 'fhir' });
  medplum.setAccessToken(token);
  const task = await medplum.readResource('Task', taskId);
  // without If-Match the gateway answers 428 Precondition Required
  return medplum.updateResource<Task>(
    { ...task, status: 'accepted' },
    { headers: { 'If-Match': `W/"${task.meta?.versionId}"` } },
  );
}

const [baseUrl, token, taskId] = process.argv.slice(2);
accept(baseUrl, token, taskId).then((t) => console.log(t.status));
