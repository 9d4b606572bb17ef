import { LabIcon } from '@jupyterlab/ui-components';

/** A hut with a shell prompt in it. */
const svgstr = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M12 2.2 1.6 10.3l1.3 1.6L4 11v10.8h16V11l1.1.9 1.3-1.6L12 2.2Zm6 17.6H6V9.5l6-4.7 6 4.7v10.3Z"/>
    <path d="m7.6 12.1 3 2.4-3 2.4-.9-1.1 1.6-1.3-1.6-1.3.9-1.1Zm4 4h4.8v1.4h-4.8v-1.4Z"/>
  </g>
</svg>`;

export const scripthutIcon = new LabIcon({ name: 'scripthut:hut', svgstr });
